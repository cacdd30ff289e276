"""
The extensions (see L{marconi.extensions}), each enabled by name in the
C{[extensions]} section and imported only then.
"""

from marconi.core.drivers import ExtensionPlugin

subscriptions = ExtensionPlugin(
    "subscriptions",
    "Zaqar's subscriptions: push delivery of posted messages to webhooks "
    "and mail addresses",
    checker="marconi.extensions.subscriptions.settings.checkSettings",
    factory="marconi.extensions.subscriptions.service.makeExtension",
)

websockets = ExtensionPlugin(
    "websockets",
    "Zaqar v2's websocket API, with push of new messages to subscribed sockets",
    "marconi.extensions.websockets.settings.check",
    "marconi.extensions.websockets.extension.Websockets",
    mount="ws",
)
