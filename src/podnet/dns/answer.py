"""The answers of CoreDNS's kubernetes plugin, computed from a View: pure, no sockets, no bytes.

The structure follows the plugin (plugin/kubernetes/{handler,kubernetes,parse,reverse,ns}.go and the
record builders of plugin/backend_lookup.go) so that a reader can hold the two side by side:

    serve()            handler.go ServeDNS: zone match, one branch per query type, NXDOMAIN vs NODATA
    _services()        kubernetes.go Services: TXT dns-version, NS glue, ns.dns.<zone>, else _records()
    _records()         kubernetes.go Records: parse the name, then pods or services
    _find_services()   kubernetes.go findServices: ClusterIP, headless/endpoint, ExternalName
    _a/_srv/_ptr/...   backend_lookup.go A, AAAA, SRV, PTR, CNAME, TXT, NS, SOA

What CoreDNS gets from the rest of its default Corefile (kubeadm's) is modelled as configuration:
`fallthrough in-addr.arpa ip6.arpa` (Config.fallthrough), `pods insecure` (Config.pods), and no
`forward` plugin: a query the plugin does not answer (a name outside the zones, or a fallthrough) reaches
the end of the plugin chain, where CoreDNS answers SERVFAIL ("no next plugin found"). docs/dns-conformance.md
lists each case with its source.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

from podnet.dns.records import NO_PORT, Address, View
from podnet.errors import PodnetError

IN = dns.rdataclass.IN
T = dns.rdatatype
DNS_SCHEMA_VERSION = "1.1.0"  # the specification's schema version (TXT dns-version.<zone>)
DEFAULT_TTL = 5  # the plugin's default `ttl`
MAX_CNAME_CHAIN = 10  # backend_lookup.go maxCnameChainLength
MAX_LOOKUP_DEPTH = 8  # re-entries of serve() for CNAME targets outside the zone (CoreDNS's upstream)
POD_MODES = ("disabled", "insecure", "verified")
IP4ARPA = ".in-addr.arpa."
IP6ARPA = ".ip6.arpa."


@dataclass(frozen=True)
class Config:
    zones: tuple[str, ...] = ("cluster.local.", "in-addr.arpa.", "ip6.arpa.")
    ttl: int = DEFAULT_TTL
    pods: str = "insecure"
    fallthrough: tuple[str, ...] = ("in-addr.arpa.", "ip6.arpa.")
    local_ips: tuple[str, ...] = ()  # the server's own addresses: NS records and ns.dns.<zone> answer with them
    endpoint_pod_names: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "zones", tuple(_fqdn(z) for z in self.zones))
        object.__setattr__(self, "fallthrough", tuple(_fqdn(z) for z in self.fallthrough))

    @property
    def primary_zone(self) -> str:
        """The first zone that is not a reverse zone: PTR targets live there (setup.go primaryZoneIndex)."""
        return next((z for z in self.zones if _is_reverse(z) == 0), self.zones[0]).rstrip(".")


def _fqdn(zone: str) -> str:
    z = zone.strip().lower()
    return z if z.endswith(".") else z + "."


@dataclass
class Reply:
    """A response before it becomes bytes. handled=False is CoreDNS's errorFunc (no AA, no SOA)."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    authoritative: bool = False
    truncated: bool = False


class NameError_(PodnetError):
    """errNoItems / errNsNotExposed / errInvalidRequest: the plugin's IsNameError (NXDOMAIN)."""


NAME_ERROR = NameError_()


@dataclass(slots=True)
class Entry:
    """msg.Service: what a lookup finds. host is an IP (A/AAAA), a name (CNAME) or empty (text: TXT)."""

    host: str = ""
    port: int = NO_PORT
    domain: str = ""  # where the entry lives (msg.Domain(Key)), the target of SRV and NS records
    text: str = ""
    ttl: int = DEFAULT_TTL

    def host_type(self) -> tuple[dns.rdatatype.RdataType, str]:
        if self.text:
            return T.TXT, ""
        known = _HOST_TYPES.get(self.host)
        if known is None:
            if len(_HOST_TYPES) > 100000:
                _HOST_TYPES.clear()
            known = _HOST_TYPES[self.host] = _host_type(self.host)
        return known


def _host_type(host: str) -> tuple[dns.rdatatype.RdataType, str]:
    """msg.Service.HostType: an IPv4 address (A, also when written v4-mapped), IPv6 (AAAA), else a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return T.CNAME, ""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return T.A, str(ip.ipv4_mapped)
    return (T.A if ip.version == 4 else T.AAAA), str(ip)


_HOST_TYPES: dict[str, tuple[dns.rdatatype.RdataType, str]] = {}


class Request:
    """The question, with the names CoreDNS keeps: name (lower case) and the zone in the query's case."""

    __slots__ = ("qname", "qtype", "zone", "zone_lower", "rel", "reverse", "_name")

    def __init__(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, zone: str, zone_lower: str,
                 rel: list[str]) -> None:
        self.qname = qname
        self.qtype = qtype
        self.zone = zone  # the matched zone as the query spelled it (state.Zone)
        self.zone_lower = zone_lower
        self.rel = rel  # the labels left of the zone, lower case, leftmost first
        # dnsutil.IsReverse: the name is below in-addr.arpa. (1) or ip6.arpa. (2)
        lower = [label.lower() for label in qname.labels]
        self.reverse = (1 if lower[-3:] == [b"in-addr", b"arpa", b""] else
                        2 if lower[-3:] == [b"ip6", b"arpa", b""] else 0) if len(lower) > 3 else 0
        self._name: str | None = None

    @property
    def name(self) -> str:
        """Lower-case presentation form with the trailing dot (state.Name()); made only when asked for."""
        if self._name is None:
            self._name = self.qname.to_text().lower()
        return self._name


@dataclass(slots=True)
class RecordRequest:
    port: str = ""
    protocol: str = ""
    endpoint: str = ""
    service: str = ""
    namespace: str = ""
    pod_or_svc: str = ""


def _is_reverse(name: str) -> int:
    if name.endswith(IP4ARPA):
        return 1
    if name.endswith(IP6ARPA):
        return 2
    return 0


def parse_request(segs: list[str]) -> RecordRequest:
    """parse.go parseRequest over the labels left of the zone:
    [_port._protocol.|endpoint.]service.namespace.(pod|svc).

    Raises NAME_ERROR for a name that cannot be a record (not under svc or pod, or too long)."""
    r = RecordRequest()
    if not segs or segs == ["svc"] or segs == ["pod"]:
        return r  # apex and the svc/pod subdomains themselves: NODATA
    last = len(segs) - 1
    r.pod_or_svc = segs[last]
    if r.pod_or_svc not in ("pod", "svc"):
        raise NAME_ERROR
    last -= 1
    if last < 0:
        return r
    r.namespace = segs[last]
    last -= 1
    if last < 0:
        return r
    r.service = segs[last]
    last -= 1
    if last < 0:
        return r
    if last == 0:
        r.endpoint = segs[0]
    elif last == 1:
        r.protocol = segs[1].removeprefix("_")
        r.port = segs[0].removeprefix("_")
    else:
        raise NAME_ERROR  # too long (zonal names are off, as by default)
    return r


def address_from_reverse(name: str) -> str:
    """dnsutil.ExtractAddressFromReverse: the IP a reverse name stands for, "" if it is none."""
    if name.endswith(IP4ARPA):
        labels = name[: -len(IP4ARPA)].split(".")[::-1]
        try:
            ip = ipaddress.ip_address(".".join(labels))
        except ValueError:
            return ""
        return str(ip) if ip.version == 4 else ""
    if name.endswith(IP6ARPA):
        labels = name[: -len(IP6ARPA)].split(".")[::-1]
        groups = ["".join(labels[i * 4:i * 4 + 4]) for i in range(len(labels) // 4)]
        try:
            ip6 = ipaddress.IPv6Address(":".join(groups))
        except ValueError:
            return ""
        return str(ip6.ipv4_mapped) if ip6.ipv4_mapped is not None else str(ip6)  # Go prints v4-mapped as v4
    return ""


def endpoint_hostname(addr: Address, endpoint_pod_names: bool = False) -> str:
    """kubernetes.go endpointHostname: the endpoint's hostname, else (optionally) its pod's name, else
    the dashed IP (1-2-3-4; for IPv6 ':' -> '-', a trailing '-' gets a '0')."""
    if addr.hostname:
        return addr.hostname
    if endpoint_pod_names and addr.target:
        return addr.target
    if "." in addr.ip:
        return addr.ip.replace(".", "-")
    if ":" in addr.ip:
        h = addr.ip.replace(":", "-")
        return h + "0" if h.endswith("-") else h
    return ""


def _match_port(want_port: str, port: str, want_proto: str, proto: str) -> bool:
    return (want_port == "" or want_port == port.lower()) and (want_proto == "" or want_proto == proto.lower())


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text if text.endswith(".") else text + ".")


_ADDRESSES: dict[str, dns.rdata.Rdata] = {}


def _address(ip: str, rdtype: dns.rdatatype.RdataType) -> dns.rdata.Rdata:
    """A or AAAA rdata, made once per address (rdata are immutable, so one object serves every answer)."""
    rd = _ADDRESSES.get(ip)
    if rd is None:
        if len(_ADDRESSES) > 100000:
            _ADDRESSES.clear()
        rd = dns.rdtypes.IN.A.A(IN, T.A, ip) if rdtype == T.A else dns.rdtypes.IN.AAAA.AAAA(IN, T.AAAA, ip)
        _ADDRESSES[ip] = rd
    return rd


def _rrset(owner: dns.name.Name, rdtype: dns.rdatatype.RdataType, ttl: int, rd: dns.rdata.Rdata
           ) -> dns.rrset.RRset:
    rs = dns.rrset.RRset(owner, IN, rdtype)
    rs.add(rd, ttl)
    return rs


class Answerer:
    """serve(view, qname, qtype) -> Reply. Thread-safe: it keeps no state between queries."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        # longest match first (plugin.Zones.Matches), compared label by label and case-insensitively
        self._zones = sorted(((z, tuple(label.lower() for label in dns.name.from_text(z).labels))
                              for z in self.config.zones), key=lambda zl: len(zl[1]), reverse=True)
        self._fallthrough = [dns.name.from_text(z) for z in self.config.fallthrough]
        self._soa_cache: dict[tuple[str, int], dns.rrset.RRset] = {}

    def request(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType) -> Request | None:
        """The Request for a question, or None if it is in none of our zones."""
        labels = qname.labels
        lower = tuple(label.lower() for label in labels)
        for zone_lower, zlabels in self._zones:
            n = len(zlabels)
            if lower[len(lower) - n:] == zlabels:
                keep = len(labels) - n
                zone = zone_lower if labels[keep:] == zlabels else dns.name.Name(labels[keep:]).to_text()
                rel = [label.decode("latin-1") for label in lower[:keep]]
                return Request(qname, qtype, zone, zone_lower, rel)
        return None

    # ---- handler.go ServeDNS ---------------------------------------------------------------------------

    def serve(self, view: View, qname: dns.name.Name, qtype: dns.rdatatype.RdataType,
              _depth: int = 0) -> Reply:
        st = self.request(qname, qtype)
        if st is None:
            return Reply(dns.rcode.SERVFAIL)  # not our zone, and no next plugin (no `forward`)
        records: list[dns.rrset.RRset] = []
        extra: list[dns.rrset.RRset] = []
        truncated = False
        try:
            if qtype in (T.A, T.AAAA):
                records, truncated = self._a(view, st, [], qtype, _depth)
            elif qtype == T.TXT:
                records = self._txt(view, st)
            elif qtype == T.CNAME:
                records = self._cname(view, st)
            elif qtype == T.PTR:
                records = self._ptr(view, st)
            elif qtype == T.MX:
                self._services(view, st)  # no entry is a mail exchanger: NODATA, or the name's error
            elif qtype == T.SRV:
                records, extra = self._srv(view, st)
            elif qtype == T.SOA:
                if not st.rel:
                    records = [self._soa(view, st)]
            elif qtype in (T.AXFR, T.IXFR):
                return Reply(dns.rcode.REFUSED)  # transfers need the transfer plugin
            elif qtype == T.NS and not st.rel:
                records, extra = self._ns(view, st)
            else:
                # a fake A lookup tells NODATA from NXDOMAIN for every other type
                self._a(view, Request(qname, T.A, st.zone, st.zone_lower, st.rel), [], T.A, _depth)
        except NameError_:
            if any(qname.is_subdomain(f) for f in self._fallthrough):
                return Reply(dns.rcode.SERVFAIL)  # passed down the chain, where nothing follows
            rcode = dns.rcode.NXDOMAIN if view.synced else dns.rcode.SERVFAIL
            return Reply(rcode, authority=[self._soa(view, st)], authoritative=True)
        if not records:
            return Reply(dns.rcode.NOERROR, authority=[self._soa(view, st)], authoritative=True)
        return Reply(dns.rcode.NOERROR, answer=records, additional=extra, authoritative=True, truncated=truncated)

    # ---- kubernetes.go ---------------------------------------------------------------------------------

    def _services(self, view: View, st: Request) -> list[Entry]:
        ttl = self.config.ttl
        if st.qtype == T.TXT:
            if st.rel == ["dns-version"]:
                return [Entry(text=DNS_SCHEMA_VERSION, ttl=28800, domain=st.qname.to_text())]
            if self._records(view, st):
                return []
            raise NAME_ERROR
        if st.qtype == T.NS:
            return [Entry(host=ip, domain=owner, ttl=ttl) for owner, ip in self._ns_addrs(view, st.zone)]
        if st.rel == ["ns", "dns"]:
            want = st.qtype
            return [Entry(host=ip, domain=st.qname.to_text(), ttl=ttl) for _, ip in self._ns_addrs(view, st.zone)
                    if (want == T.A and ":" not in ip) or (want == T.AAAA and ":" in ip)]
        found = self._records(view, st)
        if st.qtype == T.SRV:
            return [e for e in found if e.host_type()[0] != T.CNAME]
        return found

    def _records(self, view: View, st: Request) -> list[Entry]:
        r = parse_request(st.rel)
        if r.pod_or_svc == "":
            return []
        if st.reverse:
            raise NAME_ERROR
        if not view.namespace_exists(r.namespace):
            raise NAME_ERROR
        if r.pod_or_svc == "pod":
            return self._find_pods(view, r, st)
        return self._find_services(view, r, st)

    def _find_pods(self, view: View, r: RecordRequest, st: Request) -> list[Entry]:
        mode = self.config.pods
        if mode == "disabled":
            raise NAME_ERROR
        if r.service == "":
            return []
        podname = r.service
        if podname.count("-") == 3 and "--" not in podname:
            ip_text = podname.replace("-", ".")
        else:
            ip_text = podname.replace("-", ":")
        domain = f"{podname}.{r.namespace}.pod.{st.zone}"
        try:
            ip = str(ipaddress.ip_address(ip_text))
        except ValueError:
            raise NAME_ERROR from None
        if mode == "insecure":
            return [Entry(host=ip, domain=domain, ttl=self.config.ttl)]
        found = [Entry(host=ip, domain=domain, ttl=self.config.ttl)
                 for p in view.pods_by_ip.get(ip, []) if p.namespace == r.namespace]
        if not found:
            raise NAME_ERROR
        return found

    def _find_services(self, view: View, r: RecordRequest, st: Request) -> list[Entry]:
        if r.service == "":
            return []
        ttl = self.config.ttl
        zone = st.zone
        out: list[Entry] = []
        found = False
        for svc in view.services.get((r.namespace, r.service), []):
            base = f"{svc.name}.{svc.namespace}.svc.{zone}"
            if svc.type == "ExternalName":
                if r.endpoint or r.port or r.protocol:
                    continue
                e = Entry(host=svc.external_name, domain=base, ttl=ttl)
                if e.host_type()[0] == T.CNAME:
                    out.append(e)
                    found = True
                continue
            if svc.headless or r.endpoint:
                for eps in view.endpoints.get((svc.namespace, svc.name), []):
                    for addr in eps.addresses:
                        host = endpoint_hostname(addr, self.config.endpoint_pod_names)
                        if r.endpoint and r.endpoint != host.lower():
                            continue
                        for p in eps.ports:
                            if not _match_port(r.port, p.name, r.protocol, p.protocol):
                                continue
                            out.append(Entry(host=addr.ip, port=p.port, domain=f"{host}.{base}", ttl=ttl))
                            found = True
                continue
            for p in svc.ports:
                if not _match_port(r.port, p.name, r.protocol, p.protocol):
                    continue
                found = True
                out.extend(Entry(host=ip, port=p.port, domain=base, ttl=ttl) for ip in svc.cluster_ips)
        if not found:
            raise NAME_ERROR
        return out

    def _ns_addrs(self, view: View, zone: str) -> list[tuple[str, str]]:
        """ns.go nsAddrs: (owner, ip) of the Services whose endpoints are this server's own addresses."""
        out: list[tuple[str, str]] = []
        found_endpoint = False
        for local in self.config.local_ips:
            for eps in view.endpoints_by_ip.get(local, []):
                found_endpoint = True
                for svc in view.services.get((eps.namespace, eps.service), []):
                    name = f"{svc.name}.{svc.namespace}.svc.{zone}"
                    if svc.headless:
                        out += [(f"{endpoint_hostname(a, self.config.endpoint_pod_names)}.{name}", a.ip)
                                for a in eps.addresses]
                    else:
                        out += [(name, ip) for ip in svc.cluster_ips if ip not in ("", "None")]
        if not found_endpoint:
            out = [(f"ns.dns.{zone}", ip) for ip in self.config.local_ips]
        return out

    # ---- backend_lookup.go -----------------------------------------------------------------------------

    def _a(self, view: View, st: Request, previous: list[dns.rrset.RRset], want: dns.rdatatype.RdataType,
           depth: int) -> tuple[list[dns.rrset.RRset], bool]:
        """A and AAAA (want), following CNAMEs of ExternalName Services: inside the zone by recursion,
        outside it by asking ourselves again (CoreDNS's upstream), which without `forward` adds nothing."""
        services = self._services(view, st)
        records: list[dns.rrset.RRset] = []
        truncated = False
        seen: set[str] = set()
        for serv in services:
            if not serv.host:
                continue
            what, ip = serv.host_type()
            if what == T.CNAME:
                target = serv.host if serv.host.endswith(".") else serv.host + "."
                if target.lower() == st.name:
                    continue  # x CNAME x
                if len(previous) > MAX_CNAME_CHAIN:
                    continue
                cname = _rrset(st.qname, T.CNAME, serv.ttl, dns.rdtypes.ANY.CNAME.CNAME(IN, T.CNAME, _name(target)))
                if any(p[0] == cname[0] and p.name == cname.name for p in previous):
                    continue
                sub = self.request(_name(target), st.qtype)
                if sub is not None and sub.zone_lower == st.zone_lower:
                    try:
                        nxt, tc = self._a(view, sub, [*previous, cname], want, depth)
                    except NameError_:
                        continue
                    if nxt:
                        records += [cname, *nxt]
                    truncated = truncated or tc
                    continue
                if depth >= MAX_LOOKUP_DEPTH:
                    continue
                upstream = self.serve(view, _name(target), want, depth + 1)
                truncated = truncated or upstream.truncated
                records += [cname, *upstream.answer]
            elif what == want and ip not in seen:
                seen.add(ip)
                records.append(_rrset(st.qname, want, serv.ttl, _address(ip, want)))
        return records, truncated

    def _srv(self, view: View, st: Request) -> tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        services = self._services(view, st)
        total = 100 * len(services)  # every entry has priority 0 and weight 100
        records: list[dns.rrset.RRset] = []
        extra: list[dns.rrset.RRset] = []
        dup_srv: set[tuple[str, int]] = set()
        dup_addr: set[tuple[str, str]] = set()
        for serv in services:
            if serv.port == NO_PORT:
                continue
            weight = max(1, math.floor(100.0 / total * 100))
            what, ip = serv.host_type()
            if what not in (T.A, T.AAAA):
                continue
            target = serv.domain if serv.domain.endswith(".") else serv.domain + "."
            tname = _name(target)
            if (target.lower(), serv.port) not in dup_srv:
                dup_srv.add((target.lower(), serv.port))
                records.append(_rrset(st.qname, T.SRV, serv.ttl,
                                      dns.rdtypes.IN.SRV.SRV(IN, T.SRV, 0, weight, serv.port, tname)))
            if (target.lower(), ip) not in dup_addr:
                dup_addr.add((target.lower(), ip))
                extra.append(_rrset(tname, what, serv.ttl, _address(ip, what)))
        return records, extra

    def _txt(self, view: View, st: Request) -> list[dns.rrset.RRset]:
        out = []
        for serv in self._services(view, st):
            if serv.host_type()[0] == T.TXT:
                out.append(_rrset(st.qname, T.TXT, serv.ttl, dns.rdtypes.ANY.TXT.TXT(IN, T.TXT, [serv.text])))
        return out

    def _cname(self, view: View, st: Request) -> list[dns.rrset.RRset]:
        services = self._services(view, st)
        if services and services[0].host_type()[0] == T.CNAME:
            serv = services[0]
            return [_rrset(st.qname, T.CNAME, serv.ttl, dns.rdtypes.ANY.CNAME.CNAME(IN, T.CNAME, _name(serv.host)))]
        return []

    def _ptr(self, view: View, st: Request) -> list[dns.rrset.RRset]:
        ip = address_from_reverse(st.name)
        if not ip:
            self._records(view, st)  # a forward name: NODATA if it exists, else its error
            return []
        targets = self._reverse(view, ip)
        if not targets:
            raise NAME_ERROR
        seen: set[str] = set()
        out = []
        for t in targets:
            if t not in seen:
                seen.add(t)
                out.append(_rrset(st.qname, T.PTR, self.config.ttl, dns.rdtypes.ANY.PTR.PTR(IN, T.PTR, _name(t))))
        return out

    def _reverse(self, view: View, ip: str) -> list[str]:
        """reverse.go serviceRecordForIP: a ClusterIP names its Service (the first one), else every
        endpoint with the address names <hostname>.<service>.<namespace>.svc.<primary zone>."""
        zone = self.config.primary_zone
        for svc in view.services_by_ip.get(ip, []):
            return [f"{svc.name}.{svc.namespace}.svc.{zone}"]
        out = []
        for eps in view.endpoints_by_ip.get(ip, []):
            for a in eps.addresses:
                if a.ip == ip:
                    out.append(f"{endpoint_hostname(a, self.config.endpoint_pod_names)}.{eps.service}."
                               f"{eps.namespace}.svc.{zone}")
        return out

    def _ns(self, view: View, st: Request) -> tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        records: list[dns.rrset.RRset] = []
        extra: list[dns.rrset.RRset] = []
        seen: set[str] = set()
        for serv in self._services(view, st):
            what, ip = serv.host_type()
            if what not in (T.A, T.AAAA):
                continue
            target = _name(serv.domain)
            extra.append(_rrset(target, what, serv.ttl, _address(ip, what)))
            if serv.domain.lower() not in seen:
                seen.add(serv.domain.lower())
                records.append(_rrset(st.qname, T.NS, serv.ttl, dns.rdtypes.ANY.NS.NS(IN, T.NS, target)))
        return records, extra

    def _soa(self, view: View, st: Request) -> dns.rrset.RRset:
        key = (st.zone, view.serial)
        rs = self._soa_cache.get(key)
        if rs is None:
            if len(self._soa_cache) > 1000:
                self._soa_cache.clear()
            rs = self._soa_cache[key] = self._make_soa(view, st)
        return rs

    def _make_soa(self, view: View, st: Request) -> dns.rrset.RRset:
        ttl = self.config.ttl
        zone = _name(st.zone)
        rd = dns.rdtypes.ANY.SOA.SOA(IN, T.SOA, dns.name.Name((b"ns", b"dns")).concatenate(zone),
                                     dns.name.Name((b"hostmaster",)).concatenate(zone),
                                     view.serial & 0xFFFFFFFF, 7200, 1800, 86400, ttl)
        return _rrset(zone, T.SOA, min(ttl, 300), rd)
