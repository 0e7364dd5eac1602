"""The worker supervisor's port reservation (idp.workers): the address is checked before any
worker starts, and a port of 0 gets its number."""

from __future__ import annotations

import socket

import pytest

from idp.workers import reserve


def test_a_port_of_zero_is_given_a_number_and_workers_can_share_it() -> None:
    reservation = reserve("127.0.0.1", 0)
    try:
        port = reservation.getsockname()[1]
        assert port > 0
        # A worker binds the same address beside the reservation (SO_REUSEPORT) and listens.
        worker = socket.socket()
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", port))
        worker.listen()
        worker.close()
    finally:
        reservation.close()


def test_an_address_another_program_listens_on_is_refused() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError):
            reserve("127.0.0.1", other.getsockname()[1])
