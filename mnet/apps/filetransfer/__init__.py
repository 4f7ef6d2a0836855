"""Reliable file transfer over UDP, the socket guide's exercise (docs/filetransfer.md).

``wire`` (the datagrams), ``sender`` and ``receiver`` (the sans-IO protocol
machines), ``endpoints`` (a MultiOS stack's or the host kernel's UDP socket),
``files`` (partial and verified files), ``transfer`` (the run loops), ``report``
(progress and summaries) and ``service`` (``--serve udp-file``).
"""
