"""The API under load, against 127.0.0.1 only: 20 concurrent ``/generate`` calls all answer, none
errors, equal requests get equal text whatever the interleaving, the server's memory stays
bounded; bad input is an error message and the server carries on; it listens on loopback only.
Every wait has a timeout, so the run stops by itself."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("gradio_client", reason="the app extras are not installed "
                                            "(pip install -e '.[test]')")
if not Path("/proc/self/status").is_file():
    pytest.skip("reads the server's memory and sockets from /proc (Linux)", allow_module_level=True)

PROMPT = "The movie was"
CALLS = 20
#: resident memory the server may gain over 20 calls: generous against allocator noise
#: (measured: about 1 MiB per 20 calls), far below what keeping requests' state would cost
MAX_GROWTH_MB = 64
TIMEOUT_S = 120


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (``VmRSS`` in ``/proc/PID/status``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def listening_addresses(port: int) -> set[str]:
    """Hex local addresses of the sockets listening on ``port`` (``/proc/net/tcp`` and
    ``tcp6``; state ``0A`` is LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).is_file():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    url, _ = server
    assert urlparse(url).hostname == "127.0.0.1"
    return Client(url, verbose=False)


def test_twenty_concurrent_calls_answer_with_bounded_memory(server, client):
    _, process = server
    args = (12, 1.0, 0.9)  # max_new_tokens, temperature, top_p
    warm = client.predict(PROMPT, -1.0, *args, 0, api_name="/generate")
    before = rss_mb(process.pid)
    controls = [(-1.0, 1.0)[i % 2] for i in range(CALLS)]
    seeds = [i % 4 for i in range(CALLS)]
    jobs = [client.submit(PROMPT, u, *args, seed, api_name="/generate")
            for u, seed in zip(controls, seeds)]
    texts = [job.result(timeout=TIMEOUT_S) for job in jobs]
    after = rss_mb(process.pid)
    assert all(isinstance(t, str) and t for t in texts)
    assert texts[0] == warm  # u = -1, seed 0: the same text as alone
    by_request: dict = {}
    for u, seed, text in zip(controls, seeds, texts):
        by_request.setdefault((u, seed), set()).add(text)
    assert len(by_request) == 4 and all(len(v) == 1 for v in by_request.values())
    positive = {t for (u, _), ts in by_request.items() if u > 0 for t in ts}
    negative = {t for (u, _), ts in by_request.items() if u < 0 for t in ts}
    assert not positive & negative  # u = +1 and u = -1 never say the same
    assert after - before < MAX_GROWTH_MB, f"RSS grew {after - before:.0f} MiB over {CALLS} calls"
    assert process.poll() is None


def test_api_endpoints_have_stable_names_and_signatures(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/side_by_side", "/dynamics"} <= set(endpoints)
    names = [p["parameter_name"] for p in endpoints["/generate"]["parameters"]]
    assert names == ["prompt", "u", "max_new_tokens", "temperature", "top_p", "seed"]
    sides = client.predict(PROMPT, [-1.0, 0.0, 1.0], 8, 1.0, 0.9, 5, api_name="/side_by_side")
    assert len(sides) == 3 and sides[2] == client.predict(PROMPT, 1.0, 8, 1.0, 0.9, 5,
                                                          api_name="/generate")
    data = client.predict(PROMPT, 0.5, "dopri5", 1e-4, api_name="/dynamics")
    assert data["nfe"] >= 7 and len(data["probs"]) == len(data["us"])


@pytest.mark.parametrize("args, needle", [
    (("", 0.0, 5, 1.0, 0.9, 0), "the prompt is empty"),
    ((PROMPT, 5.0, 5, 1.0, 0.9, 0), "u = 5 is outside [-3, 3]"),
    ((PROMPT, 0.0, 5, 0.0, 0.9, 0), "temperature = 0 is outside"),
    (("word " * 1000, 0.0, 5, 1.0, 0.9, 0), "at most 2000 are accepted"),
], ids=["empty-prompt", "u-out-of-range", "temperature-0", "over-long-prompt"])
def test_bad_input_is_an_error_message_and_the_server_carries_on(server, client, args, needle):
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name="/generate")
    assert needle in str(info.value)
    with pytest.raises(Exception, match="tolerance = 0 is outside"):
        client.predict(PROMPT, 0.0, "dopri5", 0.0, api_name="/dynamics")
    assert client.predict(PROMPT, 1.0, 3, 1.0, 0.9, 0, api_name="/generate")
    assert server[1].poll() is None


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")
def test_it_listens_on_loopback_only(server):
    url, _ = server
    # 0100007F is 127.0.0.1 in /proc/net/tcp's byte order
    assert listening_addresses(urlparse(url).port) == {"0100007F"}
