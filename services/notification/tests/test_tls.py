"""tls.py: certificates reloaded when their files change (cert-manager rotates them in place),
a change that does not load kept out, and the peer table the policy reads."""

from __future__ import annotations

import os

from bookmesh_notification.auth import PeerInfo, SpiffeId, spiffe_id_of
from bookmesh_notification.config import Config
from bookmesh_notification.tls import TlsFront
from support.pki import issue, make_pki


def test_rotated_files_are_loaded_and_broken_ones_kept_out(tmp_path):
    pki = make_pki(tmp_path, ["notification"])
    front = TlsFront(Config.from_env({"BOOKMESH_PKI_DIR": str(pki)}), backend_port=1)
    assert not front.reload_if_changed(), "nothing changed"
    issue(pki, "notification")
    os.utime(pki / "notification.crt", ns=(1, 1))  # a new stamp, whatever the clock's resolution
    assert front.reload_if_changed()
    (pki / "notification.key").write_text("half a key")
    assert not front.reload_if_changed(), "the old credentials stay"


def test_a_call_is_matched_to_its_connection_by_the_loopback_port(tmp_path):
    pki = make_pki(tmp_path, ["notification"])
    front = TlsFront(Config.from_env({"BOOKMESH_PKI_DIR": str(pki)}), backend_port=1)
    peer = PeerInfo("10.0.0.7:40000", SpiffeId("bookmesh.local", "bookmesh", "check"))
    front._peers[54321] = peer
    assert front.peer_of("ipv4:127.0.0.1:54321") == peer
    assert front.peer_of("ipv4:127.0.0.1:1") is None
    assert front.peer_of("unix:/tmp/x") is None


def test_only_one_spiffe_id_names_a_workload():
    one = {"subjectAltName": (("DNS", "localhost"), ("URI", "spiffe://bookmesh.local/ns/bookmesh/sa/check"))}
    two = {"subjectAltName": one["subjectAltName"] + (("URI", "spiffe://bookmesh.local/ns/bookmesh/sa/rental"),)}
    assert spiffe_id_of(one) == SpiffeId("bookmesh.local", "bookmesh", "check")
    assert spiffe_id_of(two) is None
    assert spiffe_id_of(None) is None and spiffe_id_of({}) is None
