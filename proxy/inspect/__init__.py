"""Inspect: parse request bytes into `Facts` for policy and limits.

Parsers are pure functions of bytes. They use our own generated messages (proxy.pb),
which apply the same protobuf merge rules as the server's C++ parser (repeated
`model_spec` fields merge, the last map key wins), and they refuse fields they do not
know, so nothing the proxy cannot judge reaches the server.
"""
