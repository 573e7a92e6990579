"""Several service instances on one PostgreSQL database decide as one instance would.

Each instance is a real `refund-risk serve` process. A sequence of decisions, outcomes posted
to /v1/events and review resolutions, for customers who share a device, is sent across two
instances on one schema, to one instance of two worker processes on another, and to a single
one-process instance on a third; every stored decision and feature vector must agree. Then two
decisions of one customer are sent to both instances at once: they are made one after the
other, so the tier's limit on unreturned value holds.

Every customer here is pinned to the silver tier (an analyst's pin, stored before the
instances start) and the policy pays before return within the tier's limits whatever the abuse
band, so which requests are refunded before return depends on the outstanding value alone.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from features.store import create_store_engine
from serving import db
from serving.auth import Role, create_key
from training.dataset import FEATURE_NAMES

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.xdist_group("serving-model")]

REPO = Path(__file__).resolve().parents[2]
LIMIT = 300.0
"""Silver's limit on unreturned value (policy/tiers.yaml)."""


@dataclass
class Instance:
    """A running service process: its base URL and API keys."""

    url: str
    keys: dict[str, str]

    def post(self, path: str, body: Any, role: str = "scorer") -> httpx.Response:
        return httpx.post(
            self.url + path, json=body, headers={"X-API-Key": self.keys[role]}, timeout=60.0
        )


@pytest.fixture(scope="module")
def policy_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A policy paying before return within the tier's limits whatever the abuse band."""
    folder = tmp_path_factory.mktemp("shared-policy")
    policy = yaml.safe_load((REPO / "policy" / "default.yaml").read_text())
    policy["rules"] = [r for r in policy["rules"] if r["id"] != "high_risk"]
    for rule in policy["rules"]:
        if rule["id"] == "trusted_refund_before_return":
            rule["when"].pop("abuse_band")
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy))
    return {"REFUND_RISK_POLICY_PATH": str(folder / "policy.yaml")}


def _prepare(url: str, schema: str, silver: list[str]) -> dict[str, str]:
    """Migrate, pin the `silver` customers to silver, and make one API key per role."""
    engine = create_store_engine(url, schema=schema)
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        db.migrate(engine)
        with engine.begin() as connection:
            for customer_id in silver:
                connection.execute(
                    sa.insert(db.TIER_PINS).values(
                        pin_id=f"pin-{customer_id}",
                        customer_id=customer_id,
                        tier="silver",
                        reason="test",
                        created_by="test",
                        created_at=now,
                        expires_at=datetime(2099, 1, 1),  # the same in every run
                    )
                )
        return {role.value: create_key(engine, role, f"test {role.value}")[1] for role in Role}
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def instances(
    count: int,
    url: str,
    schema: str,
    world: Any,
    policy: dict[str, str],
    tmp: Path,
    silver: list[str],
    workers: int = 1,
) -> Iterator[list[Instance]]:
    """`count` service instances of `workers` processes each on one schema (the `silver`
    customers pinned to silver), started together, stopped after."""
    keys = _prepare(url, schema, silver)
    env = {
        **os.environ,
        "REFUND_RISK_DATA_DIR": str(tmp / "data"),
        "REFUND_RISK_DATABASE_URL": url,
        "REFUND_RISK_DATABASE_SCHEMA": schema,
        "REFUND_RISK_MLRUNS_DIR": str(world.settings.mlruns_dir),
        "REFUND_RISK_MLFLOW_TRACKING_URI": str(world.settings.mlflow_tracking_uri),
        "REFUND_RISK_API_KEY_CACHE_SECONDS": "0",
        "REFUND_RISK_ALERT_INTERVAL_SECONDS": "0",
        "REFUND_RISK_REQUIRE_HISTORY": "false",  # each schema starts with no history
        **policy,
    }
    command = [str(Path(sys.executable).parent / "refund-risk"), "serve", "--log-level", "warning"]
    with ExitStack() as stack:
        running: list[tuple[subprocess.Popen[bytes], str]] = []
        for _ in range(count):
            port = _free_port()
            process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            stack.callback(_stop, process)
            running.append((process, f"http://127.0.0.1:{port}"))
        for process, base in running:
            _wait_ready(process, base, workers)
        yield [Instance(base, keys) for _, base in running]


def _wait_ready(process: subprocess.Popen[bytes], base: str, workers: int = 1) -> None:
    """Wait until the instance is ready: with several workers, each answers its own probe,
    so readiness must hold on many connections in a row (whichever worker takes each)."""
    deadline = time.monotonic() + 180
    in_a_row = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"the service exited with {process.returncode}: {err[-2000:]}")
        try:
            ready = httpx.get(base + "/readyz", timeout=2.0).status_code == 200
        except httpx.TransportError:
            ready = False
        in_a_row = in_a_row + 1 if ready else 0
        if in_a_row >= (1 if workers == 1 else 10 * workers):
            return
        time.sleep(0.2 if not ready else 0.01)
    raise RuntimeError(f"the service at {base} was not ready in time")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Scenario:
    """Builds requests and events for customers whose times start at `base`."""

    def __init__(self, base: datetime, tag: str) -> None:
        self.base = base
        self.tag = tag
        self.orders: dict[str, dict[str, Any]] = {}

    def at(self, seconds: float) -> datetime:
        return self.base + timedelta(seconds=seconds)

    def order(self, customer: str, n: int, device: str, amount: float = 400.0) -> dict[str, Any]:
        order_id = f"o-{self.tag}-{customer}-{n}"
        order = {
            "order_id": order_id,
            "ordered_at": _iso(self.at(-10 * 86400 + n)),
            "category": "apparel",
            "amount": amount,
            "item_count": 2,
            "payment_method": "card",
            "device_id": device,
            "address_id": f"a-{self.tag}-{customer}",
            "payment_fingerprint": f"p-{self.tag}-{customer}",
            "shipped_at": _iso(self.at(-9 * 86400)),
            "delivered_at": _iso(self.at(-7 * 86400)),
            "delivery_evidence": "photo",
        }
        self.orders[order_id] = order
        return order

    def request(
        self, customer: str, refund: str, order: dict[str, Any], amount: float, second: float
    ) -> dict[str, Any]:
        return {
            "refund_id": f"r-{self.tag}-{refund}",
            "customer_id": f"c-{self.tag}-{customer}",
            "requested_at": _iso(self.at(second)),
            "refund_type": "return_and_refund",
            "reason": "not_as_described",
            "reason_detail": "wrong_size",
            "amount_requested": amount,
            "photo_count": 0,
            "order_stage": "delivered",
            "order": order,
            "customer": {"signup_at": _iso(self.at(-400 * 86400)), "region": "north"},
        }


def _run(steps: list[tuple[int, str, Any]], nodes: list[Instance], schema_url: Any) -> None:
    """Send each step to its instance (index modulo the number of instances), in order."""
    for index, kind, payload in steps:
        node = nodes[index % len(nodes)]
        if kind == "decide":
            response = node.post("/v1/refund-decisions", payload)
        elif kind == "events":
            response = node.post("/v1/events", payload)
        else:  # resolve: the review case of a refund id
            refund_id, decision = payload
            with schema_url.connect() as connection:
                case_id = connection.execute(
                    sa.text("SELECT case_id FROM serving_review_cases WHERE refund_id = :r"),
                    {"r": refund_id},
                ).scalar()
            assert case_id is not None, f"{refund_id} was not sent to review"
            response = node.post(
                f"/v1/reviews/{case_id}/resolve", {"decision": decision}, role="reviewer"
            )
        assert response.status_code == 200, (kind, payload, response.text)


def _stored(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """Every stored decision by refund id: what decides and what it was decided on."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT refund_id, action, rule_id, tier, abuse_score, features, response "
                "FROM serving_decisions"
            )
        ).all()
    out = {}
    for row in rows:
        response = json.loads(row.response)
        out[row.refund_id] = {
            "action": row.action,
            "rule_id": row.rule_id,
            "tier": row.tier,
            "abuse_score": row.abuse_score,
            "reasons": response["reasons"],
            "features": json.loads(row.features),
        }
    return out


def _same_features(a: list[Any], b: list[Any]) -> bool:
    """Equal, NaN (null) included; a review's outcome carries the wall clock's time, so a
    feature counting days from it may differ by the seconds between the two runs."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            if x is not y:
                return False
        elif not math.isclose(x, y, rel_tol=1e-9, abs_tol=0.01):
            return False
    return True


def _sequence(s: Scenario) -> list[tuple[int, str, Any]]:
    """Decisions, outcomes and a review for three customers, two sharing a device; the first
    number says which instance gets the step."""
    shared = f"d-{s.tag}-shared"
    o1, o2, o3 = s.order("1", 1, shared), s.order("2", 1, shared), s.order("3", 1, "d-own")
    o1b = s.order("1", 2, shared)
    c = f"c-{s.tag}-"
    return [
        (0, "decide", s.request("1", "1", o1, 100.0, 1)),  # paid before return: 100 out
        (1, "decide", s.request("1", "2", o1, 100.0, 2)),  # sees the first: 200 out
        (0, "decide", s.request("2", "3", o2, 90.0, 3)),  # linked to customer 1
        (0, "decide", s.request("3", "4", o3, 100.0, 4)),
        (1, "decide", s.request("3", "5", o3, 100.0, 5)),
        (0, "decide", s.request("3", "6", o3, 100.0, 6)),  # 300 out: the limit
        (1, "decide", s.request("3", "7", o3, 50.0, 7)),  # over the limit: standard return
        # Customer 1's first refund is found abusive: posted to one instance...
        (
            1,
            "events",
            {
                "outcomes": [
                    {
                        "outcome_id": f"x-{s.tag}-1",
                        "refund_id": f"r-{s.tag}-1",
                        "is_abusive": True,
                        "known_at": _iso(s.at(8)),
                        "source": "warehouse_check",
                    }
                ]
            },
        ),
        # ...and both instances see it: customer 2 is now linked to an abuser (a review case),
        (0, "decide", s.request("2", "8", o2, 60.0, 9)),
        # customer 1 is a confirmed abuser with 100 no longer out.
        (0, "decide", s.request("1", "9", o1b, 80.0, 10)),
        (1, "resolve", (f"r-{s.tag}-8", "reject_abuse")),
        (0, "decide", s.request("2", "10", o2, 40.0, 12)),  # customer 2 confirmed abusive too
        (0, "events", {"orders": [{**o3, "customer_id": f"{c}3"}]}),
        (1, "decide", s.request("3", "11", o3, 20.0, 13)),
        (0, "decide", s.request("1", "12", o1b, 30.0, 14)),  # linked to customer 2 now
    ]


def test_two_instances_decide_as_one(
    serving_world: Any,
    postgres_schema: tuple[str, str],
    new_schema: Callable[[], str],
    policy_files: dict[str, str],
    tmp_path: Path,
) -> None:
    url = postgres_schema[0]
    # Requests may be at most five minutes ahead of the service's clock; a review's outcome
    # is known at the wall clock's time, before every request of the sequence.
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=240)
    results = {}
    # Two instances; one instance of two worker processes (the sequence's requests go to
    # whichever worker takes each connection); one instance of one process.
    for name, count, workers in (("two", 2, 1), ("workers", 1, 2), ("one", 1, 1)):
        schema = new_schema()
        engine = create_store_engine(url, schema=schema)
        steps = _sequence(Scenario(base, "s"))
        silver = [f"c-s-{n}" for n in (1, 2, 3)]
        tmp = tmp_path / name
        with instances(
            count, url, schema, serving_world, policy_files, tmp, silver, workers
        ) as nodes:
            _run(steps, nodes, engine)
        results[name] = _stored(engine)
        engine.dispose()
    assert datetime.now(UTC) < base, "too slow: the reviews' outcomes came after the requests"
    one = results["one"]
    assert len(one) == 12
    for name in ("two", "workers"):
        several = results[name]
        assert sorted(several) == sorted(one), name
        for refund_id in one:
            a, b = dict(several[refund_id]), dict(one[refund_id])
            assert _same_features(a.pop("features"), b.pop("features")), (name, refund_id)
            assert a == b, (name, refund_id)
    actions = {r: one[f"r-s-{r}"]["action"] for r in range(1, 13)}
    # What the sequence is there to exercise: the limit, an outcome and a review seen by
    # the other instance.
    assert actions[6] == "refund_before_return" and actions[7] != "refund_before_return"
    assert one["r-s-8"]["rule_id"] == "linked_to_abusers"
    assert one["r-s-9"]["rule_id"] == "confirmed_abuser_no_privileges"
    confirmed = FEATURE_NAMES.index("customer_confirmed_abusive_refunds")
    assert one["r-s-10"]["features"][confirmed] == 1  # the review, resolved on the other
    assert one["r-s-12"]["rule_id"] == "linked_to_abusers"


def _race(nodes: list[Instance], bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send bodies[i] to nodes[i], all at the same moment; the answers in the same order."""
    gate = threading.Barrier(len(bodies))
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def send(i: int) -> None:
        gate.wait()
        answers[i] = nodes[i].post("/v1/refund-decisions", bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def test_racing_decisions_of_one_customer_keep_the_limit(
    serving_world: Any,
    postgres_schema: tuple[str, str],
    new_schema: Callable[[], str],
    policy_files: dict[str, str],
    tmp_path: Path,
) -> None:
    url = postgres_schema[0]
    schema = new_schema()
    engine = create_store_engine(url, schema=schema)
    s = Scenario(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5), "race")
    customers = [str(i) for i in range(12)]
    silver = [f"c-race-{c}" for c in customers]
    with instances(2, url, schema, serving_world, policy_files, tmp_path, silver) as nodes:
        for customer in customers:  # 200 out each: one more 100 is within the limit, two not
            order = s.order(customer, 1, f"d-race-{customer}")
            for n in (1, 2):
                body = s.request(customer, f"{customer}-{n}", order, 100.0, n)
                assert nodes[n % 2].post("/v1/refund-decisions", body).status_code == 200
        for customer in customers:
            order = s.orders[f"o-race-{customer}-1"]
            bodies = [s.request(customer, f"{customer}-{n}", order, 100.0, n) for n in (3, 4)]
            answers = _race(nodes, bodies)
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT customer_id, refund_id, action, amount_requested "
                "FROM serving_decisions ORDER BY customer_id, decided_at"
            )
        ).all()
    engine.dispose()
    by_customer: dict[str, list[Any]] = {}
    for row in rows:
        by_customer.setdefault(row.customer_id, []).append(row)
    assert len(by_customer) == len(customers)
    for customer, decided in by_customer.items():
        paid = [r.refund_id for r in decided if r.action == "refund_before_return"]
        # 200 was out before the race; of the two racing 100s exactly one fits the limit.
        assert len(paid) == 3, (customer, [(r.refund_id, r.action) for r in decided])
        assert sum(r.amount_requested for r in decided if r.refund_id in paid) <= LIMIT
