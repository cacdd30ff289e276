from twisted.application.service import ServiceMaker

marconi = ServiceMaker(
    "Marconi",
    "marconi.tap",
    "A multi-tenant message bus with a Zaqar v2 compatible HTTP API.",
    "marconi",
)
