"""DNS that rebinds, for the webhook tests: put this directory on PYTHONPATH and, in that process,
``rebind.emotionq.test`` resolves to 127.0.0.1 and 127.0.0.2 in turn, one lookup each, as a hostile
name server would answer a check and then the connection that follows it. Every other name
resolves as usual."""

import itertools
import socket

REBINDING_HOST = "rebind.emotionq.test"
_answers = itertools.cycle(["127.0.0.1", "127.0.0.2"])
_getaddrinfo = socket.getaddrinfo


def _rebinding_getaddrinfo(host, *args, **kwargs):
    if host in (REBINDING_HOST, REBINDING_HOST.encode()):
        host = next(_answers)
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _rebinding_getaddrinfo
