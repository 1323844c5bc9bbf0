"""``/metrics`` text: every family has HELP and TYPE, and prometheus_client's own parser reads it back."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from cobox.status import GroupMetrics, Metrics, metrics_text


def _metrics() -> Metrics:
    groups = (GroupMetrics("photos", 12, 30_000, 4096, 3, 1, 2, 1),
              GroupMetrics('we"ird\\\n', 9, 0, 0, 0, 0, 0, 0))
    return Metrics(peers=3, groups=2, bytes_sent=100, bytes_received=200, entries_replicated=7, protocol_errors=1,
                   group_entries=groups, connection_kinds=(("direct LAN", 2), ("relayed via ab12", 1)))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_family_has_help_and_type_and_parses() -> None:
    text = metrics_text(_metrics())
    families = list(text_string_to_metric_families(text))
    assert len(families) == 13
    for fam in families:
        name = fam.name + "_total" if fam.type == "counter" else fam.name  # the 0.0.4 text names counters so
        assert f"# HELP {name} " in text and f"# TYPE {name} {fam.type}" in text
        assert fam.documentation
    types = {fam.name: fam.type for fam in families}
    assert types["cobox_bytes_sent"] == "counter" and types["cobox_peers"] == "gauge"


def test_connection_kinds_bytes_by_group_refusals_and_audits() -> None:
    s = _samples(metrics_text(_metrics()))
    assert s[("cobox_peers_by_kind", (("kind", "direct LAN"),))] == 2
    assert s[("cobox_peers_by_kind", (("kind", "relayed via ab12"),))] == 1
    assert s[("cobox_group_bytes_received_total", (("group", "photos"),))] == 30_000
    assert s[("cobox_group_folder_bytes", (("group", "photos"),))] == 4096
    assert s[("cobox_group_records_refused_total", (("group", "photos"),))] == 3
    assert s[("cobox_group_feeds_refused_total", (("group", "photos"),))] == 1
    assert s[("cobox_group_backup_audits", (("group", "photos"), ("result", "passed")))] == 2
    assert s[("cobox_group_backup_audits", (("group", "photos"), ("result", "failed")))] == 1
    assert s[("cobox_bytes_sent_total", ())] == 100 and s[("cobox_protocol_errors_total", ())] == 1


def test_group_names_are_escaped_and_read_back_exactly() -> None:
    s = _samples(metrics_text(_metrics()))
    assert s[("cobox_group_entries", (("group", 'we"ird\\\n'),))] == 9
