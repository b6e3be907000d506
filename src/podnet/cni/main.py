"""Exec entry points of the CNI plugins. Kept lean: imported once per pod."""


def bridge_main() -> None:
    raise SystemExit("not implemented yet")


def host_local_main() -> None:
    raise SystemExit("not implemented yet")


def flannel_main() -> None:
    raise SystemExit("not implemented yet")
