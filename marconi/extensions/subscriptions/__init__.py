"""
Subscriptions: Zaqar v2's C{/v2/queues/{queue}/subscriptions} resources
and push delivery of every message posted to a subscribed queue, to
webhooks (HTTP POST, signed) and mail addresses (C{mailto:}).

Enabled with C{[extensions] enabled = subscriptions}; its settings are in
C{[extension:subscriptions]} (L{settings}).  See C{docs/subscriptions.rst}.
The modules: L{settings} (checked without importing the rest), L{policy}
(documents and the retry policy), L{records} (storage), L{delivery}
(sending and the outbox worker), L{service} (the extension).
"""
