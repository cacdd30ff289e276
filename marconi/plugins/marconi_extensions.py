"""
The extensions (see L{marconi.extensions}), each enabled by name in the
C{[extensions]} section and imported only then.
"""

from marconi.core.drivers import ExtensionPlugin

websockets = ExtensionPlugin(
    "websockets",
    "Zaqar v2's websocket API, with push of new messages to subscribed sockets",
    "marconi.extensions.websockets.settings.check",
    "marconi.extensions.websockets.extension.Websockets",
    mount="ws",
)
