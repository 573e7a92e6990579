"""The FastAPI application: the composition root and the routes.

`create_app(settings)` returns an app whose lifespan builds the service (database, event store,
models, policy: see `serving.service.Service.start`) and closes it on shutdown; routes receive it
and the caller's key through `Annotated` dependencies. Nothing is built at import.

Routes are `async def`: the work of a decision is short and CPU-bound, and running it on the
event loop costs less than a thread hand-off (and keeps the online builder single-threaded).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from refund_risk.errors import ConfigurationError, RefundRiskError
from refund_risk.settings import Settings, load_settings
from serving import alerts, ops_routes
from serving.auth import Role
from serving.errors import (
    AuthenticationError,
    PermissionDeniedError,
    install_error_handlers,
)
from serving.metrics import CONTENT_TYPE, LatencyMiddleware, Metrics
from serving.middleware import BodyLimitMiddleware, StartingMiddleware
from serving.schemas import (
    FACT_CONFLICT_EXAMPLE,
    IDEMPOTENCY_CONFLICT_EXAMPLE,
    ORDER_CONFLICT_EXAMPLE,
    STAGE_ERROR_EXAMPLE,
    BatchDecisionOut,
    BatchDecisionRequest,
    CheckOut,
    CustomerTierOut,
    DecisionOut,
    ErrorResponse,
    EventsIn,
    EventsOut,
    ReadinessOut,
    RefundDecisionRequest,
    ReloadIn,
    ReloadOut,
    StoredDecisionOut,
    UtcTime,
)
from serving.service import DecisionResult, Service
from serving.startup import StartState, history_check, preflight

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 100)
"""Garbage collector thresholds once started (defaults: 700, 10, 10). Measured under load:
p99 146 -> 64 ms and 12% more throughput; young collections take ~12 ms, every second or so."""

API_KEY_HEADER = "X-API-Key"
REPLAY_HEADER = "Idempotent-Replay"

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="A key made with `refund-risk keys create --role ROLE`.",
)


async def get_service(request: Request) -> Service:
    """The service the lifespan built (async: a plain function would run in a thread pool)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def require(*roles: Role) -> Callable[..., Awaitable[Service]]:
    """A dependency that lets in keys of these roles (and admin keys) and gives the service.

    One dependency level, not two: FastAPI's resolution of each level costs tens of
    microseconds, a noticeable share of a decision.
    """
    allowed = frozenset((*roles, Role.ADMIN))
    names = ", ".join(sorted(r.value for r in allowed))

    async def authorised(
        request: Request, token: Annotated[str | None, Security(_api_key)] = None
    ) -> Service:
        service: Service = request.app.state.service
        if not token:
            raise AuthenticationError(f"an API key is required in the {API_KEY_HEADER} header")
        principal = service.keys.authenticate(token)
        if principal is None:
            raise AuthenticationError("the API key is unknown or revoked")
        if principal.role not in allowed:
            raise PermissionDeniedError(
                f"a {principal.role.value} key may not do this; it needs one of: {names}"
            )
        return service

    return authorised


AsScorer = Annotated[Service, Depends(require(Role.SCORER))]
AsReviewer = Annotated[Service, Depends(require(Role.REVIEWER))]
AsTierReader = Annotated[Service, Depends(require(Role.SCORER, Role.REVIEWER))]
AsAdmin = Annotated[Service, Depends(require())]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorResponse, "description": "The key's role may not do this."},
    422: {"model": ErrorResponse, "description": "Invalid request; `fields` names each."},
    503: {
        "model": ErrorResponse,
        "description": "The database did not answer; retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "The body is not JSON (`malformed_json`); the message names the line "
        "and column.",
    },
    413: {
        "model": ErrorResponse,
        "description": "The body is larger than the service's limit (1 MiB by default, "
        "`REFUND_RISK_MAX_BODY_BYTES`); refused before it is read whole.",
    },
    **_ERRORS,
}
"""What a route taking a JSON body may answer besides its own result."""
_DECISION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_BODY_ERRORS,
    409: {
        "model": ErrorResponse,
        "description": "`idempotency_conflict`: the refund id was used before for a different "
        "request (`fields` names what differs; nothing of the stored decision is shown). "
        "`order_conflict`: the order belongs to another customer, or the request contradicts "
        "the order's recorded facts (customer, time, category, amount, item count, payment, "
        "fingerprints; shipping and delivery times may only be filled in or move later); "
        "nothing is written.",
        "content": {
            "application/json": {
                "examples": {
                    "idempotency_conflict": {"value": IDEMPOTENCY_CONFLICT_EXAMPLE},
                    "order_of_another_customer": {"value": ORDER_CONFLICT_EXAMPLE},
                    "fixed_fact": {"value": FACT_CONFLICT_EXAMPLE},
                }
            }
        },
    },
    422: {
        "model": ErrorResponse,
        "description": "Invalid request; `fields` names each field to change (also a stage "
        "the order's own times contradict, an amount above the order's, a requested_at in the "
        "future beyond the clock-skew allowance).",
        "content": {"application/json": {"examples": {"stage": {"value": STAGE_ERROR_EXAMPLE}}}},
    },
}
_EVENT_ERRORS: dict[int | str, dict[str, Any]] = {
    **_BODY_ERRORS,
    409: {
        "model": ErrorResponse,
        "description": "An order row names another customer's order, or contradicts an "
        "order's recorded facts (`fields` names each, as `orders.<index>.<field>`); nothing of "
        "the call is written.",
        "content": {
            "application/json": {
                "examples": {
                    "order_of_another_customer": {
                        "value": {
                            "error": {
                                **ORDER_CONFLICT_EXAMPLE["error"],
                                "fields": [
                                    {
                                        **ORDER_CONFLICT_EXAMPLE["error"]["fields"][0],
                                        "field": "orders.0.customer_id",
                                    }
                                ],
                            }
                        }
                    }
                }
            }
        },
    },
}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ErrorResponse,
        "description": "The decision was not recorded (the database refused it, or did not "
        "answer within the record timeout), so none is returned. Retry after `Retry-After` "
        "seconds with the same refund id: the retry returns the decision if it was recorded "
        "meanwhile, else decides anew.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
}

router = APIRouter()


DECISION_PATH = "/v1/refund-decisions"
_SCORERS = frozenset((Role.SCORER, Role.ADMIN))


async def create_decision(body: RefundDecisionRequest, service: AsScorer) -> Response:
    """Decide a refund request and store the decision before answering.

    The refund id is the idempotency key, bound to the request: the same id with the same
    request (compared in canonical form: time zones, key order, spacing and omitted defaults
    do not matter) returns the stored decision, unchanged, with the header
    `Idempotent-Replay: true`; with a different request, 409 `idempotency_conflict` naming
    the fields that differ. Role: scorer.
    """
    return decision_response(await service.decide(body))


def decision_response(result: DecisionResult) -> Response:
    """The HTTP answer of a decision: its stored JSON body as is, marked if replayed."""
    headers = {REPLAY_HEADER: "true"} if result.replayed else None
    return Response(result.body, media_type="application/json", headers=headers)


class DecisionRoute(APIRoute):
    """The decision route: FastAPI's route, reading a request that is simply right in one step.

    Every decision request passes through the whole middleware stack, the routing and the
    exception handlers, like any other route. What differs is the handler: FastAPI's request
    handling (dependency resolution; the body parsed to Python objects, then validated) costs
    a large share of a decision's time, so a request with a JSON body, a scorer's (or admin's)
    key and a valid refund request is instead parsed and validated from its bytes in one
    step, and decided. Any other request (no or an unknown key, a wrong role, another content
    type, an invalid body, the service not built) goes to FastAPI's own handler for the
    route, which answers it as for any route; errors while deciding go to the same exception
    handlers in both cases.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        framework = super().get_route_handler()

        async def handle(request: Request) -> Response:
            service: Service | None = request.app.state.service
            if service is not None and request.app.state.direct_decisions:
                read = await _simply_right(service, request)
                if read is not None:
                    return decision_response(await service.decide(*read))
            return await framework(request)

        return handle


async def _simply_right(
    service: Service, request: Request
) -> tuple[RefundDecisionRequest, bytes] | None:
    """The refund request and the body it was read from, if the call is a scorer's valid
    request with a JSON body; None for FastAPI's handler to answer."""
    content_type = token = None
    for name, value in request.scope["headers"]:
        if name == b"content-type" and content_type is None:
            content_type = value
        elif name == b"x-api-key" and token is None:
            token = value
    if content_type != b"application/json" or not token:
        return None
    principal = service.keys.authenticate(token.decode("latin-1"))
    if principal is None or principal.role not in _SCORERS:
        return None
    try:
        raw = await request.body()
    except StarletteHTTPException:
        raise  # a body over the limit: 413, as the framework answers it
    except Exception:
        return None  # the client went away mid-body: the framework says what it says
    try:
        return RefundDecisionRequest.model_validate_json(raw), raw
    except ValidationError:
        return None


router.add_api_route(
    DECISION_PATH,
    create_decision,
    route_class_override=DecisionRoute,
    methods=["POST"],
    response_model=DecisionOut,
    responses={**_DECISION_ERRORS, **_UNAVAILABLE},
    tags=["decisions"],
    summary="Decide one refund request",
)


@router.post(
    "/v1/refund-decisions/batch",
    response_model=BatchDecisionOut,
    responses={**_BODY_ERRORS, **_UNAVAILABLE},
    tags=["decisions"],
    summary="Decide several refund requests",
)
async def create_decisions(body: BatchDecisionRequest, service: AsScorer) -> Any:
    """Decide up to the batch limit of requests; each is answered or refused on its own.

    Each result carries its own status: 200 with the decision (`replayed` if it was stored
    before), 422 with the bad fields, 409 if its refund id was used for a different request
    (`idempotency_conflict`) or it contradicts its order's recorded facts (`order_conflict`),
    or 503 if it could not be recorded. The whole call is
    answered 503 only when no request could be recorded. Role: scorer.
    """
    results = await service.decide_batch(body.requests)
    retry = str(service.settings.retry_after_seconds)
    out = BatchDecisionOut(results=results)
    if results and all(r.status == 503 for r in results):
        first = results[0].error
        assert first is not None
        return JSONResponse(
            ErrorResponse(error=first).model_dump(),
            status_code=503,
            headers={"Retry-After": retry},
        )
    if any(r.status == 503 for r in results):
        return JSONResponse(out.model_dump(mode="json"), headers={"Retry-After": retry})
    return out


@router.get(
    "/v1/refund-decisions/{decision_id}",
    response_model=StoredDecisionOut,
    responses={**_ERRORS, 404: {"model": ErrorResponse, "description": "No such decision."}},
    tags=["decisions"],
    summary="A stored decision, its inputs and features",
)
async def get_decision(
    decision_id: Annotated[
        str, Path(min_length=1, max_length=64, description="Decision id (or the refund id).")
    ],
    service: AsReviewer,
) -> StoredDecisionOut:
    """The decision as it was returned, the request it answered and the feature values used.
    Role: reviewer."""
    # A database read (and JSON decoding) for ops: off the event loop that serves decisions.
    return await run_in_threadpool(service.stored_decision, decision_id)


@router.get(
    "/v1/customers/{customer_id}/tier",
    response_model=CustomerTierOut,
    responses={**_ERRORS, 404: {"model": ErrorResponse, "description": "Unknown customer."}},
    tags=["customers"],
    summary="A customer's credit tier",
)
async def get_customer_tier(
    customer_id: ops_routes.PathId,
    service: AsTierReader,
    as_of: Annotated[
        UtcTime | None,
        Query(
            description="The tier of the latest monthly snapshot before this moment; default: now."
        ),
    ] = None,
) -> CustomerTierOut:
    """Tier, loss probability, privileges and refunded-before-return value outstanding.
    Roles: scorer, reviewer."""
    return service.customer_tier(customer_id, as_of)


@router.post(
    "/v1/events",
    response_model=EventsOut,
    responses={**_EVENT_ERRORS, **_UNAVAILABLE},
    tags=["events"],
    summary="Append orders, deliveries, outcomes and identity links",
)
async def post_events(body: EventsIn, service: AsScorer) -> EventsOut:
    """Append events so features stay fresh; rows sent twice are ignored, an order sent again
    (shipped, delivered) replaces the stored one, but only its shipping and delivery may
    progress: a row naming another customer's order or changing an order's fixed facts is
    answered 409 and nothing of the call is written. Visible to the next decision.
    Role: scorer."""
    return service.append_events(body)


@router.post(
    "/v1/admin/reload",
    response_model=ReloadOut,
    responses={
        **_BODY_ERRORS,
        409: {"model": ErrorResponse, "description": "Refused; what is in use is kept."},
    },
    tags=["admin"],
    summary="Reload models by alias, and the policy",
)
async def reload(service: AsAdmin, body: ReloadIn | None = None) -> ReloadOut:
    """Load the models under an alias (and re-read the policy files) and switch to them
    without dropping requests. Role: admin."""
    body = body or ReloadIn()
    return await service.reload(body.alias, body.policy)


@router.get(
    "/healthz",
    tags=["health"],
    summary="Liveness",
    responses={503: {"description": "The service failed to start; `detail` says why."}},
)
async def healthz(request: Request) -> Response:
    """The process answers: from its first second, while the history and models still load
    (readiness is `/readyz`). 503 once the start has failed for good, so that a liveness probe
    replaces the process."""
    starting: StartState | None = request.app.state.starting
    if starting is not None and starting.failure is not None:
        return JSONResponse({"status": "failed", "detail": starting.failure}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=ReadinessOut,
    responses={
        200: {"description": "Ready: decisions are made and recorded (perhaps degraded)."},
        503: {
            "model": ReadinessOut,
            "description": "Not ready: still starting (`starting`: the history and models are "
            "loading), or decisions cannot be recorded (no database, the recorder has not "
            "answered for a while, or the last few groups failed), or the event store holds "
            "no history (`event_store` names the database and schema read).",
        },
    },
    tags=["health"],
    summary="Readiness: can it decide and record, and with what",
)
async def readyz(request: Request) -> Response:
    """200 when the instance can decide and record decisions, also when degraded (no abuse
    model: the rules-only policy decides, and `degraded` says so); 503 while it starts, when
    decisions cannot be recorded, and when the event store holds no history (every customer
    would look new; `REFUND_RISK_REQUIRE_HISTORY=false` accepts that, for a shop starting from
    none). The body names the models (name, version, alias) and the policy in use, and each
    check. Liveness is `/healthz`."""
    service: Service | None = request.app.state.service
    if service is None:
        starting: StartState = request.app.state.starting or StartState()
        readiness = ReadinessOut(
            status="starting" if starting.failure is None else "unavailable",
            ready=False,
            degraded=False,
            models=[],
            policy="not loaded yet",
            checks={"start": starting.check()},
        )
        return JSONResponse(readiness.model_dump(), status_code=503)
    readiness = service.readiness()
    if readiness.checks["database"].ok:
        try:
            history = await run_in_threadpool(
                history_check, service.engine, service.settings.require_history
            )
        except sa.exc.SQLAlchemyError as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            history = CheckOut(ok=False, detail=first[0] if first else "unreadable")
        readiness.checks["event_store"] = history
        if not history.ok:
            readiness.ready = False
            readiness.status = "unavailable"
    return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(service: ServiceDep) -> Response:
    """Request latency by route, decisions by action, models and policy in use."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


def create_app(
    settings: Settings | None = None,
    *,
    freeze_gc: bool = True,
    service: Service | None = None,
    served: bool = False,
    direct_decisions: bool = True,
) -> FastAPI:
    """The API, with a lifespan that builds the service from `settings` (or uses `service`).

    Without `settings`, they are read from the environment (`REFUND_RISK_*`), so that
    `uvicorn serving.app:create_app --factory` works; `serving.asgi:app` is the documented
    entry point.

    `served` is for a process that serves the API (`refund-risk serve`, `serving.asgi`): the
    start-up first checks what can make it fail for good (`serving.startup.preflight`: policy
    files, database, and that no other process serves a SQLite file), failing the start with
    that sentence; then it builds the service in a thread while the process answers
    `/healthz` from its first second, `/readyz` with 503 `starting`, and every other route
    with 503 `starting` and a `Retry-After`. Otherwise the lifespan builds the service before
    the first request is answered.

    `direct_decisions=False` sends every decision request through FastAPI's own request
    handling (see `DecisionRoute`): the answers are the same, only slower.

    `freeze_gc` moves everything built at start-up out of the garbage collector's way: the
    models, the event store in memory and MLflow's modules are long-lived, and a full collection
    over them showed as 100 ms pauses in the latency tail. It also makes collections rarer
    (`GC_THRESHOLDS`): the online builder keeps adding long-lived objects (each customer's
    history as it is touched), and with the default thresholds full collections over them ran
    every second under load, 80 ms each.
    """

    if settings is None:
        settings = load_settings()
    config = settings

    def begin(app: FastAPI, built: Service) -> asyncio.Task[None] | None:
        """Put the built service in use; the alert evaluation task, if any."""
        app.state.service = built
        evaluating = None
        if config.alert_interval_seconds > 0:
            evaluating = asyncio.create_task(
                alerts.evaluate_periodically(
                    built.engine,
                    app.state.alerts,
                    app.state.alert_sender,
                    config.alert_interval_seconds,
                    built.reviews.clock,
                )
            )
        if freeze_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        return evaluating

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not served or service is not None:
            built = service or Service.start(config)
            evaluating = begin(app, built)
            try:
                yield
            finally:
                if evaluating is not None:
                    evaluating.cancel()
                app.state.service = None
                if service is None:
                    built.close()
            return
        try:
            lock = await asyncio.to_thread(preflight, config)
        except ConfigurationError as exc:
            log.error("the service cannot start: %s", exc)
            raise
        state = app.state.starting = StartState()
        tasks: list[asyncio.Task[None] | None] = []

        async def build() -> Service | None:
            try:
                built = await asyncio.to_thread(Service.start, config)
            except Exception as exc:
                state.failure = str(exc) if isinstance(exc, RefundRiskError) else repr(exc)
                log.error("the service failed to start: %s", state.failure, exc_info=exc)
                return None
            tasks.append(begin(app, built))
            log.info("ready after %.1f s", time.monotonic() - state.began)
            return built

        building = asyncio.create_task(build())
        try:
            yield
        finally:
            # A stop during the start waits for it, so nothing is left half-open.
            finished = await building
            for task in tasks:
                if task is not None:
                    task.cancel()
            app.state.service = None
            if finished is not None:
                finished.close()
            if lock is not None:
                lock.release()

    app = FastAPI(
        title="Refund risk",
        version="1",
        summary="Decides refund requests: an action, a risk score, a credit tier and reasons.",
        description=(
            "Every call except health and metrics needs an API key in the `X-API-Key` header. "
            "Roles: `scorer` (refund systems: decisions, events, tiers), `reviewer` (ops: the "
            "review queue, overrides, stored decisions, tiers; also the pages under `/ops`, "
            "signed in with the key), `admin` (everything, and reloads). Errors have one body: "
            '`{"error": {"code", "message", "fields"}}`.'
        ),
        lifespan=lifespan,
    )
    app.state.service = None
    app.state.direct_decisions = direct_decisions
    app.state.starting = None
    app.state.alerts = alerts.load_alerts(settings.alerts)
    secret = None if settings.alert_secret is None else settings.alert_secret.get_secret_value()
    app.state.alert_sender = alerts.sender_for(app.state.alerts, secret)
    install_error_handlers(app, settings.retry_after_seconds)
    app.include_router(router)
    ops_routes.install(app, settings)

    def current_metrics() -> Metrics | None:
        built: Service | None = app.state.service
        return None if built is None else built.metrics

    # The first added runs innermost: a body over the limit is refused first of all, before
    # any key is checked; then requests that need the service wait for it; the latency
    # histogram times what gets past both.
    app.add_middleware(LatencyMiddleware, metrics=current_metrics)
    app.add_middleware(StartingMiddleware, state=app.state)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    return app
