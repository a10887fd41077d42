"""The SAN's replica of the PAN (issue 7 item 1), on real processes: a PAN,
a SAN and a PSN.

Everything the PAN keeps travels in its event log, and the SAN applies all
of it: users, templates, certificates issued over the PSN's EST (outbox),
node certificates signed at join, revocations and holds, node records,
join tokens and alarms ("Queue Link Error" included), and the events
themselves, kept in the SAN's own events table under the PAN's keys.  The
SAN's views (`san cert list`, `san alarms`) print the same text as the
PAN's, from the same code over the replica; the two stores' tables are
compared with mdb_dump, an independent reader of LMDB.

`san status` shows the lag and it goes to 0; `pan node list` shows the
SAN's sync state: Sync Completed, Out of Sync while it is stopped, Sync
Completed again after it caught up.  A SAN killed with SIGKILL while
events stream in catches up after a restart with no gap and nothing
twice."""

import re
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "psn"))
import test_est_psn as est  # noqa: E402
import test_revocation as rv  # noqa: E402
from iselab import (LINK_TIMEOUT, START_TIMEOUT, lab, member_events,  # noqa: E402,F401
                    parse_table, run, wait_for)

# Most certificates one `cert list` call shows (STORE_PAGE_MAX).
PAGE = "1000"
# A generous bound for a catch-up of a few hundred events on a loaded host.
CATCHUP_TIMEOUT = 120


def deployment(lab):
    """A running PAN, SAN and PSN (the PSN serving EST)."""
    pan = lab.pan()
    pan.user_add(rv.USER, rv.PASSWORD)
    san = lab.san("san1")
    san.join(pan.node_add("san1", "san"), check=True)
    san.start()
    psn = lab.psn("psn1")
    psn.join(pan.node_add("psn1", "psn"), check=True)
    psn.start()
    wait_for(lambda: est.tcp_listening(psn.address.ip), est.START_TIMEOUT,
             "psn1 to serve EST", detail=psn.log_text)
    return pan, san, psn


def mdb_table(node, table):
    """{key: value} of one table of a node's store, as mdb_dump prints them
    (printable, -p), read with LMDB's own tool while the daemon runs."""
    p = run(["mdb_dump", "-p", "-s", table, str(node.datadir / "store")], timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    start = lines.index("HEADER=END") + 1
    end = lines.index("DATA=END")
    body = lines[start:end]
    return {body[i].strip(): body[i + 1].strip() for i in range(0, len(body), 2)}


def event_seqs(node):
    """The sequence numbers in a node's events table, in key order."""
    keys = run(["mdb_dump", "-s", "events", str(node.datadir / "store")],
               timeout=60).stdout.splitlines()
    # mdb_dump without -p prints keys and values in hex, one per line.
    start = keys.index("HEADER=END") + 1
    return [int(keys[i].strip(), 16) for i in range(start, keys.index("DATA=END"), 2)]


def replica_status(san):
    """(applied, pan newest, lag, sync words) from `san status`."""
    out = san.cli("status", check=True).stdout
    m = re.search(r"Replica:\s+last applied event (\d+), newest on the PAN (\d+)", out)
    lag = re.search(r"Replica lag:\s+(\d+) events \(([^)]*)\)", out)
    assert m and lag, out
    return int(m.group(1)), int(m.group(2)), int(lag.group(1)), lag.group(2)


def sync_state(pan, host):
    """The SYNC column of `pan node list` for host (words, may hold spaces)."""
    for fields, line in parse_table(pan.cli("node", "list", check=True).stdout, "HOSTNAME"):
        if fields[0] == host:
            return " ".join(fields[6:])
    return None


def wait_sync(pan, san, words="Sync Completed", timeout=CATCHUP_TIMEOUT):
    wait_for(lambda: sync_state(pan, san.hostname) == words, timeout,
             f"{san.hostname} to be '{words}' in pan node list",
             detail=lambda: pan.cli("node", "list").stdout + san.cli("status").stdout)


def wait_replica(pan, san, timeout=CATCHUP_TIMEOUT):
    """Until the SAN applied every event the PAN holds now."""
    want = pan.event_seq()
    wait_for(lambda: member_events(san) is not None and member_events(san)[0] >= want,
             timeout, f"san1 to apply events up to {want}",
             detail=lambda: san.cli("status").stdout + san.log_text()[-3000:])
    return want


def views(node):
    return {
        "certs": node.cli("cert", "list", "--limit", PAGE, check=True).stdout,
        "alarms": node.cli("alarms", "--all", check=True).stdout,
    }


def assert_same_state(pan, san):
    """The SAN holds what the PAN holds: same views, same tables."""
    assert views(san) == views(pan)
    for table in ("certs", "certs_by_serial", "certs_by_subject", "tokens", "alarms",
                  "events"):
        assert mdb_table(san, table) == mdb_table(pan, table), table
    # Node records: the same nodes with the same records, but for the last
    # heartbeat the PAN writes on link changes for itself alone.
    assert sorted(mdb_table(san, "nodes")) == sorted(mdb_table(pan, "nodes"))
    pan_cfg, san_cfg = mdb_table(pan, "config"), mdb_table(san, "config")
    for k, v in pan_cfg.items():
        if k.startswith(("user/", "template/", "settings/")):
            assert san_cfg.get(k) == v, k
    seqs = event_seqs(san)
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate in the SAN's log"


def cert_rows(text):
    """{serial: (issuer node, profile, status)} of a `cert list`."""
    rows = {}
    for f, _ in parse_table(text, "SERIAL"):
        if f[0] == "more:":
            continue
        assert f[0] not in rows, f"{f[0]} listed twice"
        rows[f[0]] = (f[-4], f[-3], f[-1])
    return rows


def test_replica_follows_the_pan(lab):
    pan, san, psn = deployment(lab)
    wait_replica(pan, san)
    wait_sync(pan, san)

    # Users, a template, enrollments through the PSN's EST, a revocation
    # and a hold, a new node, a template removed.
    pan.user_add("bob", "bob-password-1")
    pan.template_add("short", "--validity", "2d")
    certs = [rv.enroll(lab, psn, f"dev{i}") for i in range(4)]
    serials = [s for _, s in certs]
    wait_for(lambda: all(s in cert_rows(pan.cli("cert", "list", "--limit", PAGE).stdout)
                         for s in serials),
             LINK_TIMEOUT * 2, "the PSN's outbox to reach the PAN",
             detail=lambda: psn.log_text()[-3000:])
    pan.cli("cert", "revoke", serials[0], "--reason", "keyCompromise", check=True)
    pan.cli("cert", "hold", serials[1], check=True)
    pan.template_add("gone", "--validity", "1d")
    pan.cli("template", "remove", "gone", check=True)
    psn2 = lab.psn("psn2")
    psn2.join(pan.node_add("psn2", "psn"), check=True)
    # An alarm: psn2 runs, then goes away (Queue Link Error on the PAN).
    psn2.start()
    pan.wait_state("psn2", "connected")
    psn2.stop()
    wait_for(lambda: "Queue Link Error" in pan.alarms(), LINK_TIMEOUT,
             "Queue Link Error for psn2", detail=pan.alarms)

    seq = wait_replica(pan, san)
    wait_sync(pan, san)
    applied, newest, lag, words = replica_status(san)
    assert applied >= seq and lag == 0 and words == "Sync Completed"
    assert_same_state(pan, san)

    rows = cert_rows(san.cli("cert", "list", "--limit", PAGE, check=True).stdout)
    assert rows[serials[0]][2] == "revoked" and rows[serials[1]][2] == "hold"
    assert all(rows[s][0] == "psn1" and rows[s][2] == "good" for s in serials[2:])
    # The CA certificates of pan init and of every join are there too.
    profiles = sorted(p for _, p, _ in rows.values())
    for want in ("root-ca", "node-ca", "endpoint-sub-ca"):
        assert want in profiles, profiles
    san_alarms = san.cli("alarms", check=True).stdout
    assert "Queue Link Error" in san_alarms and "psn2" in san_alarms
    assert san_alarms == pan.alarms()
    nodes = san.cli("node", "list", check=True).stdout
    hosts = {f[0]: f[1] for f, _ in parse_table(nodes, "HOSTNAME")}
    assert hosts == {"san1": "san", "psn1": "psn", "psn2": "psn"}, nodes

    # The alarm clears when psn2 is back; the replica follows.
    psn2.start()
    wait_for(lambda: "Queue Link Error" not in pan.alarms(), LINK_TIMEOUT,
             "Queue Link Error to clear", detail=pan.alarms)
    wait_replica(pan, san)
    assert san.cli("alarms", check=True).stdout == pan.alarms()

    # The PSN skipped what only the replica keeps: no other node's
    # certificates in its store, and it applied every event all the same.
    psn.wait_events(pan)
    psn_certs = mdb_table(psn, "certs")
    assert len(psn_certs) < len(mdb_table(pan, "certs"))
    assert not mdb_table(psn, "events"), "a PSN keeps no event log"


def test_san_stopped_out_of_sync_then_catches_up(lab):
    pan, san, psn = deployment(lab)
    wait_replica(pan, san)
    wait_sync(pan, san)
    san.stop()
    wait_sync(pan, san, "Out of Sync", timeout=LINK_TIMEOUT)
    # Changes while the SAN is away.
    for i in range(3):
        pan.template_add(f"away{i}", "--validity", f"{i + 1}d")
    serial = rv.enroll(lab, psn, "while-away")[1]
    wait_for(lambda: serial in cert_rows(pan.cli("cert", "list", "--limit", PAGE).stdout),
             LINK_TIMEOUT * 2, "the enrollment to reach the PAN")
    pan.cli("cert", "revoke", serial, check=True)
    seq = pan.event_seq()

    san.start()
    wait_sync(pan, san)
    applied, newest, lag, words = replica_status(san)
    assert applied >= seq and lag == 0, (applied, seq, lag)
    assert_same_state(pan, san)
    rows = cert_rows(san.cli("cert", "list", "--limit", PAGE, check=True).stdout)
    assert rows[serial][2] == "revoked"


def test_san_killed_mid_stream_catches_up(lab):
    pan, san, psn = deployment(lab)
    wait_replica(pan, san)
    stop = threading.Event()
    made = []

    def writer():
        # Templates: cheap events, one CLI call each.
        i = 0
        while not stop.is_set() and i < 400:
            pan.template_add(f"t{i}", "--validity", f"{i % 30 + 1}d")
            made.append(i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        # Kill the SAN while the events stream in (after it applied some).
        base = member_events(san)[0]
        wait_for(lambda: (member_events(san) or (0, 0))[0] > base + 20, CATCHUP_TIMEOUT,
                 "san1 to apply streamed events")
        san.kill()
        applied_at_kill = len(event_seqs(san))
        # More events while it is down.
        wait_for(lambda: len(made) >= 60 or not t.is_alive(), CATCHUP_TIMEOUT,
                 "more events while san1 is down")
    finally:
        stop.set()
        t.join(300)
    # A few certificates too, so that the catch-up carries some.
    serials = [rv.enroll(lab, psn, f"after-kill{i}")[1] for i in range(3)]
    wait_for(lambda: all(s in cert_rows(pan.cli("cert", "list", "--limit", PAGE).stdout)
                         for s in serials),
             LINK_TIMEOUT * 2, "the PSN's outbox to reach the PAN")
    assert pan.event_seq() > applied_at_kill

    san.start()
    wait_replica(pan, san)
    wait_sync(pan, san)
    assert_same_state(pan, san)
    # Every certificate once in the replica (and the same set as the PAN).
    san_rows = cert_rows(san.cli("cert", "list", "--limit", PAGE, check=True).stdout)
    assert san_rows == cert_rows(pan.cli("cert", "list", "--limit", PAGE, check=True).stdout)
