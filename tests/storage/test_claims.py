"""Claims on shared folders (dynamics.storage.claims): created only if absent, one winner among racers,
stale claims taken over by exactly one run, a taken-over owner told so. Locally and on S3 (moto)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dynamics.storage import claims
from dynamics.storage.claims import ClaimLost, new_owner, read_claim, release, renew, try_claim


@pytest.fixture(params=["local", "s3"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "_shared" / "embed-abc")
    return request.getfixturevalue("s3_bucket") + "/work/_shared/embed-abc"


def test_first_claims_others_wait_and_release_frees_it(folder: str) -> None:
    a, b = new_owner("a"), new_owner("b")
    mine = try_claim(folder, a, now=1000.0)
    assert mine is not None and mine.owner == a
    assert try_claim(folder, b, now=1010.0) is None  # a live claim: b waits
    held = read_claim(folder)
    assert held is not None and held.owner == a
    release(mine)
    assert read_claim(folder) is None
    assert try_claim(folder, b, now=1020.0) is not None


def test_racing_claimants_get_exactly_one_claim(folder: str) -> None:
    owners = [new_owner(f"r{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        won = [c for c in pool.map(lambda o: try_claim(folder, o, now=1000.0), owners) if c is not None]
    assert len(won) == 1
    held = read_claim(folder)
    assert held is not None and held.owner == won[0].owner


def test_a_stale_claim_is_taken_over_once_and_its_owner_finds_out(folder: str) -> None:
    dead = try_claim(folder, new_owner("dead"), now=1000.0)
    assert dead is not None
    late = 1000.0 + claims.LEASE_S + 1
    takers = [new_owner(f"t{i}") for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        won = [c for c in pool.map(lambda o: try_claim(folder, o, now=late), takers) if c is not None]
    assert len(won) == 1
    with pytest.raises(ClaimLost, match="taken over"):
        renew(dead, now=late + 1)
    release(dead)  # not ours any more: left alone
    held = read_claim(folder)
    assert held is not None and held.owner == won[0].owner
    renewed = renew(won[0], now=late + 5)
    assert renewed.heartbeat == late + 5
    assert try_claim(folder, new_owner("x"), now=late + 5 + claims.LEASE_S / 2) is None  # renewed: live


def test_staleness_is_pure() -> None:
    claim = claims.Claim("u", "o", heartbeat=100.0)
    assert not claims.is_stale(claim, 100.0 + claims.LEASE_S)
    assert claims.is_stale(claim, 100.0 + claims.LEASE_S + 0.1)
