"""Tiny traffic tools for the proxy integration tests, run inside test namespaces with `ip netns exec`.

  serve NAME --tcp PORT --udp PORT     HTTP-ish TCP server and UDP echo; both answer "NAME PEER_IP"
  tcp HOST PORT --count N              N fresh connections; prints JSON {"NAME": count, ..., "errors": n}
  connect HOST PORT                    one connection; prints JSON {"result": ok|refused|timeout, "seconds", "body"}
  udp HOST PORT --sport P --count N    one flow from a fixed source port; prints "t NAME" per reply (flushed)
  bind IP PORT                         try to listen on IP:PORT; prints JSON {"result": ok|in-use}, then with
                                       --hold stays listening and prints "accepted" for each connection
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import sys
import threading
import time


def serve(name: str, tcp_port: int, udp_port: int) -> None:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(2)
            try:
                self.request.recv(1024)
            except OSError:
                pass
            body = f"{name} {self.client_address[0]}\n".encode()
            self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("0.0.0.0", tcp_port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", udp_port))
    print("ready", flush=True)
    while True:
        data, addr = u.recvfrom(2048)
        u.sendto(f"{name} {addr[0]}".encode(), addr)


def _get(host: str, port: int, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[-1].decode().strip()


def tcp(host: str, port: int, count: int) -> None:
    out: dict[str, int] = {"errors": 0}
    for _ in range(count):
        try:
            name = _get(host, port, 3).split()[0]
            out[name] = out.get(name, 0) + 1
        except (OSError, IndexError):
            out["errors"] += 1
    print(json.dumps(out))


def connect(host: str, port: int, timeout: float) -> None:
    t = time.monotonic()
    try:
        body = _get(host, port, timeout)
        res = {"result": "ok", "body": body}
    except ConnectionRefusedError:
        res = {"result": "refused"}
    except TimeoutError:
        res = {"result": "timeout"}
    except OSError as e:
        res = {"result": f"error: {e}"}
    res["seconds"] = round(time.monotonic() - t, 3)
    print(json.dumps(res))


def udp(host: str, port: int, sport: int, count: int, interval: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", sport))
    s.settimeout(interval)
    start = time.monotonic()
    for i in range(count):
        s.sendto(f"ping {i}".encode(), (host, port))
        try:
            data, _ = s.recvfrom(2048)
            print(f"{time.monotonic() - start:.3f} {data.decode().split()[0]}", flush=True)
            time.sleep(max(0.0, interval - 0.001))
        except (TimeoutError, OSError):
            print(f"{time.monotonic() - start:.3f} -", flush=True)


def bind(ip: str, port: int, hold: bool) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, port))
        s.listen(5)
    except OSError:
        print(json.dumps({"result": "in-use"}), flush=True)
        return
    print(json.dumps({"result": "ok"}), flush=True)
    while hold:
        conn, _ = s.accept()
        print("accepted", flush=True)
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("name")
    p.add_argument("--tcp", type=int, default=8080)
    p.add_argument("--udp", type=int, default=5353)
    p = sub.add_parser("tcp")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=10)
    p = sub.add_parser("connect")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=3)
    p = sub.add_parser("udp")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--sport", type=int, default=40000)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--interval", type=float, default=0.1)
    p = sub.add_parser("bind")
    p.add_argument("ip")
    p.add_argument("port", type=int)
    p.add_argument("--hold", action="store_true")
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a.name, a.tcp, a.udp)
    elif a.cmd == "tcp":
        tcp(a.host, a.port, a.count)
    elif a.cmd == "connect":
        connect(a.host, a.port, a.timeout)
    elif a.cmd == "udp":
        udp(a.host, a.port, a.sport, a.count, a.interval)
    elif a.cmd == "bind":
        bind(a.ip, a.port, a.hold)


if __name__ == "__main__":
    sys.exit(main())
