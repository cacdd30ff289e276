"""
The websockets extension: Zaqar v2's websocket API (the JSON frames
python-zaqarclient's websocket transport speaks) on the node's listeners at
C{/ws}, for queue, message, claim and subscription operations, and push of
new messages to the sockets subscribed to a queue.  See
C{docs/websockets.rst}.

This package's C{__init__} stays light: the settings checker
(L{marconi.extensions.websockets.settings}) runs when a configuration is
read, without autobahn; L{marconi.extensions.websockets.extension} is
imported only when the extension is enabled.
"""
