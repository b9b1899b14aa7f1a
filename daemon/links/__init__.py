"""Signed tracking tokens, tracked links, UTM parameters and the signing keyring.

Modules (import them directly; this package imports nothing so ``topslot.campaign`` can use ``utm``):

- ``keys``: the HMAC keyring (settings keys, rotation, a generated demo key);
- ``tokens``: pure ``sign`` / ``verify`` of compact URL-safe tokens;
- ``urls``: URL normalisation and the deterministic link key;
- ``utm``: UTM parameters appended to landing URLs;
- ``short``: the 26-character ``/s/`` short click codes of SMS (stateless, 48-bit MAC);
- ``tracking``: the tracking base and the ``/c/``, ``/s/``, ``/o/``, ``/u/`` URLs;
- ``book``: ``LinkBook``, the (link key → destination) pairs a dispatch batch used;
- ``factory``: ``CampaignLinks`` / ``DeliveryLinks``, what the renderer calls per message.
"""
