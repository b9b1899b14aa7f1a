"""Email delivery feedback after the SMTP conversation: asynchronous bounces (DSNs and the common
non-standard ones), spam complaints (ARF feedback reports), auto-replies (ignored) and ``mailto:``
unsubscribes.

``topslot.links.verp`` signs each message's envelope sender (``bounce+{token}@{domain}``) and reads
it back; ``classify`` reads one message (pure); ``record`` applies what it found to the ledger and the
suppression list; ``receiver`` is the LMTP/SMTP listener relays hand bounces to; ``topslot bounces
import`` reads mailbox files and Maildirs collected otherwise."""
