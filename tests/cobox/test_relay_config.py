"""[relay] settings: three-way enabled/use, relay servers checked, auto decisions."""

from __future__ import annotations

import os

import pytest

from cobox import config
from cobox.errors import ConfigError
from cobox.relaying import limits, publicly_reachable, wanted
from cobox.settings import RelaySettings
from networker.encoding import encode_key

K = encode_key(os.urandom(32))


def test_enabled_and_use_are_auto_true_or_false(tmp_path):
    cfg = config.load(tmp_path, env={})
    assert cfg.relay.enabled == "auto" and cfg.relay.use == "auto"
    (tmp_path / "config.toml").write_text(
        f"[relay]\nenabled = true\nuse = false\nservers = ['tcp:198.18.0.1:4~noise:{K}']\n")
    cfg = config.load(tmp_path, env={})
    assert cfg.relay.enabled is True and cfg.relay.use is False
    assert config.load(tmp_path, env={"COBOX_RELAY_ENABLED": "false"}).relay.enabled is False
    assert limits(cfg.relay).circuit_bytes_per_second == cfg.relay.circuit_kbps * 1024


@pytest.mark.parametrize("text,needle", [
    ("[relay]\nenabled = 'sometimes'\n", 'relay.enabled must be "auto", true or false'),
    ("[relay]\nuse = 1\n", "relay.use must be"),
    ("[relay]\nservers = ['tcp:1.2.3.4:5']\n", "relay.servers"),
    (f"[relay]\nservers = ['tcp:1.2.3.4:5~noise:{K}~relay:{encode_key(os.urandom(32))}']\n", "relay.servers"),
])
def test_bad_relay_settings_are_refused(tmp_path, text, needle):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=needle):
        config.load(tmp_path, env={})


def test_auto_offers_a_relay_only_with_an_outside_address_and_uses_one_otherwise():
    behind = [f"tcp:10.1.0.2:4000~noise:{K}", f"tcp:127.0.0.1:4000~noise:{K}"]
    public = [*behind, f"tcp:198.18.0.1:4000~noise:{K}"]
    assert not publicly_reachable(behind) and publicly_reachable(public)
    assert wanted("auto", True) and not wanted("auto", False)
    assert wanted(True, False) and not wanted(False, True)


def test_relays_named_in_an_invite_become_candidates():
    from cobox.relaying import MAX_HINTED, Relaying

    class Swarm:
        def refresh(self) -> None: ...

    cfg = RelaySettings(servers=(f"tcp:198.18.0.1:4~noise:{K}",))
    r = Relaying(cfg, node=None, dht=None, swarm=Swarm(), advertised=list, expand=lambda a: [a])
    relay, me = encode_key(os.urandom(32)), encode_key(os.urandom(32))
    relayed = f"tcp:198.18.0.7:47200~noise:{relay}~relay:{me}"
    r.learn([f"tcp:198.18.0.9:47100~noise:{me}", relayed, "not an address", relayed])
    assert r.candidates() == [cfg.servers[0], f"tcp:198.18.0.7:47200~noise:{relay}"]  # the hop, once
    r.learn(f"tcp:198.18.1.{i}:1~noise:{relay}~relay:{me}" for i in range(2 * MAX_HINTED))
    assert len(r.hinted) == MAX_HINTED and r.hinted[0] == f"tcp:198.18.1.{2 * MAX_HINTED - 1}:1~noise:{relay}"


def test_a_dual_stack_relay_listener_is_announced_on_both_families():
    from cobox.relaying import expand_wildcard

    def local_ips(v6: bool) -> list[str]:
        return ["2001:db8::5"] if v6 else ["198.18.0.5"]

    assert expand_wildcard("tcp:[::]:47101", local_ips) == ["tcp:198.18.0.5:47101", "tcp:[2001:db8::5]:47101"]
    assert expand_wildcard("tcp:0.0.0.0:47101", local_ips) == ["tcp:198.18.0.5:47101"]
