"""nfacct counters (extended accounting objects, NFNL_SUBSYS_ACCT) over raw nfnetlink.

kube-proxy creates its counters before it loads rules that match them (`-m nfacct --nfacct-name ...`);
pyroute2 has no nfacct support, and a hand-built message keeps the proxy's start free of pyroute2's import.
"""

from __future__ import annotations

import errno
import socket
import struct

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_ACCT = 7
_NFNL_MSG_ACCT_NEW = 0
_NFACCT_NAME = 1
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_CREATE = 0x1, 0x4, 0x400
_NLMSG_ERROR = 2


def create(name: str) -> int:
    """Create the counter `name` in this namespace; 0 when it exists afterwards, else the kernel's errno."""
    data = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(data), _NFACCT_NAME) + data
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0) + attr
    msg = struct.pack("=IHHII", 16 + len(body), (_NFNL_SUBSYS_ACCT << 8) | _NFNL_MSG_ACCT_NEW,
                      _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE, 1, 0) + body
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sk:
            sk.settimeout(2)
            sk.send(msg)
            reply = sk.recv(4096)
    except OSError as e:
        return e.errno or errno.EIO
    if len(reply) >= 20 and struct.unpack_from("=H", reply, 4)[0] == _NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, 16)[0]
        return 0 if code in (0, errno.EEXIST, errno.EBUSY) else code
    return 0
