"""Bytes in, bytes out: the one place that reads and writes DNS messages (dnspython for the format).

What happens to a message before and after the answer, as CoreDNS's server (miekg/dns) does it:

- shorter than a header, or a response (QR set): dropped, nothing is sent (a reply could be used to
  amplify; miekg's MsgInvalidFunc / MsgIgnore);
- an opcode other than QUERY: NOTIMP; not exactly one question, more than one answer or authority record,
  more than two additional ones, or anything dnspython cannot parse: FORMERR, header only;
- a class other than IN: REFUSED (CoreDNS's server, without the chaos plugin);
- EDNS version above 0: BADVERS (edns.Version);
- the answer is cut to fit the client's size (512 bytes over UDP without EDNS, the OPT's payload size with
  it, 65535 over TCP): whole records are kept in order, answer then authority then additional, and TC is
  set if any record had to go (miekg's Msg.Truncate, called by CoreDNS's ScrubWriter);
- the response echoes the request's OPT (version 0, its payload size, its DO bit) when there was one.

Answers are cached per view generation, dropped as soon as the cluster changes, so the cache never serves
an answer older than the last change (CoreDNS's default Corefile has `cache 30`, which may: its TTLs bound
that staleness). The key is the query after its ID with the question's name in lower case, so resolvers
that randomise the case of names (0x20) still hit it. A hit is the cached response with the query's ID and
the query's own question bytes put back: every name the answer repeats from the question is a compression
pointer into it (owners, the zone in the SOA), so the answer takes the new query's case too. SRV answers are
keyed by the exact case, because their targets repeat the zone uncompressed (RFC 2782).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset

from podnet.dns.answer import Answerer, Reply
from podnet.dns.records import View

log = logging.getLogger("podnet.dns")

HEADER = struct.Struct("!HHHHHH")
MIN_UDP = 512  # RFC 1035's limit, and RFC 6891's floor for an advertised size
MAX_TCP = 65535
OPT_LEN = 11  # root name, type, class, ttl, rdlength: an OPT without options
CACHE_ENTRIES = 10000
CACHE_MAX_QUERY = 512  # only ordinary-sized queries are cache keys
# plain ints: enum.Flag arithmetic costs microseconds per operation on the hot path
QR, AA, TC, RD, CD = (int(f) for f in (dns.flags.QR, dns.flags.AA, dns.flags.TC, dns.flags.RD, dns.flags.CD))
SRV_TYPE = struct.pack("!H", dns.rdatatype.SRV)


@dataclass
class Stats:
    """Counts by outcome (the server logs them; tests read them)."""

    queries: int = 0
    dropped: int = 0
    formerr: int = 0
    cache_hits: int = 0
    errors: int = 0


def _header_reply(msg_id: int, flags: int, rcode: int, *, keep_opcode: bool = False) -> bytes:
    """A header-only reply: FORMERR (opcode QUERY) or NOTIMP (the request's opcode), RD and CD kept."""
    out = QR | (flags & (RD | CD)) | (rcode & 0xF)
    if keep_opcode:
        out |= flags & 0x7800
    return HEADER.pack(msg_id, out, 0, 0, 0, 0)


def _question_end(wire: bytes) -> int:
    """Where the question ends if its name is plain labels (no compression pointer), else 0."""
    i, n = 12, len(wire)
    while i < n:
        length = wire[i]
        if length == 0:
            return i + 5 if i + 5 <= n else 0
        if length & 0xC0:
            return 0
        i += length + 1
    return 0


class Responder:
    """respond(query bytes, tcp) -> response bytes or None. Safe to call from several threads."""

    def __init__(self, answerer: Answerer, view: Callable[[], View]) -> None:
        self.answerer = answerer
        self.view = view
        self.stats = Stats()
        self._cache: dict[bytes, tuple[bytes, bytes]] = {}  # key -> (header after the ID, after the question)
        self._cache_gen = -1
        self._lock = threading.Lock()

    def respond(self, wire: bytes, tcp: bool) -> bytes | None:
        self.stats.queries += 1
        if len(wire) < HEADER.size:
            self.stats.dropped += 1
            return None
        msg_id, flags, qd, an, ns, ar = HEADER.unpack_from(wire)
        if flags & QR:
            self.stats.dropped += 1
            return None
        opcode = (flags >> 11) & 0xF
        if opcode != dns.opcode.QUERY:
            return _header_reply(msg_id, flags, dns.rcode.NOTIMP, keep_opcode=True)
        if qd != 1 or an > 1 or ns > 1 or ar > 2:
            self.stats.formerr += 1
            return _header_reply(msg_id, flags, dns.rcode.FORMERR)
        view = self.view()
        qend = _question_end(wire) if len(wire) <= CACHE_MAX_QUERY else 0
        key = None
        if qend:
            name = wire[12:qend - 4] if wire[qend - 4:qend - 2] == SRV_TYPE else wire[12:qend - 4].lower()
            key = (b"T" if tcp else b"U") + wire[2:12] + name + wire[qend - 4:]
            if self._cache_gen == view.generation:
                hit = self._cache.get(key)
                if hit is not None:
                    self.stats.cache_hits += 1
                    return wire[:2] + hit[0] + wire[12:qend] + hit[1]
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, struct.error, IndexError, UnicodeError) as e:
            log.debug("malformed query (%s): %s", type(e).__name__, e)
            self.stats.formerr += 1
            return _header_reply(msg_id, flags, dns.rcode.FORMERR)
        try:
            out = self._answer(query, view, tcp)
        except Exception:  # noqa: BLE001 - a bug answers SERVFAIL to this query, as CoreDNS recovers a panic
            log.exception("answering %s", query.question)
            self.stats.errors += 1
            return _header_reply(msg_id, flags, dns.rcode.SERVFAIL)
        if key is not None:
            with self._lock:
                if self._cache_gen != view.generation:
                    self._cache.clear()
                    self._cache_gen = view.generation
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = (out[2:12], out[qend:])
        return out

    def _answer(self, query: dns.message.Message, view: View, tcp: bool) -> bytes:
        q = query.question[0]
        has_edns = query.edns >= 0
        if q.rdclass != dns.rdataclass.IN:  # only the chaos plugin answers other classes
            return self._render(query, Reply(dns.rcode.REFUSED), MIN_UDP,
                                edns_payload=query.payload if has_edns else None)
        if has_edns and query.edns > 0:
            return self._render(query, Reply(dns.rcode.BADVERS), MIN_UDP, edns_payload=MIN_UDP)
        reply = self.answerer.serve(view, q.name, q.rdtype)
        size = MAX_TCP if tcp else (max(MIN_UDP, query.payload) if has_edns else MIN_UDP)
        return self._render(query, reply, size, edns_payload=query.payload if has_edns else None)

    @staticmethod
    def _render(query: dns.message.Message, reply: Reply, size: int, *, edns_payload: int | None) -> bytes:
        q = query.question[0]
        flags = QR | (query.flags & (RD | CD)) | (reply.rcode & 0xF)
        if reply.authoritative:
            flags |= AA
        if reply.truncated:
            flags |= TC
        r = dns.renderer.Renderer(query.id, flags, size)
        r.add_question(q.name, q.rdtype, q.rdclass)
        if edns_payload is not None:
            r.reserve(OPT_LEN)
        omitted = False
        for section, rrsets in ((dns.renderer.ANSWER, reply.answer), (dns.renderer.AUTHORITY, reply.authority),
                                (dns.renderer.ADDITIONAL, reply.additional)):
            for rs in rrsets:
                if omitted:
                    break
                try:
                    r.add_rrset(section, rs)
                except dns.exception.TooBig:
                    omitted = True
        if omitted:
            r.flags |= TC
        if edns_payload is not None:
            r.release_reserved()
            do = query.ednsflags & dns.flags.DO
            ext_rcode = dns.rcode.to_flags(reply.rcode)[1]
            r.add_edns(0, do | ext_rcode, max(edns_payload, MIN_UDP))
        r.write_header()
        return r.get_wire()
