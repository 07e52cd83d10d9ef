"""A channel per user through kill -9 of the aggregator (docs/reliability.md, "Messages"):
1,000 topics `u{i}`, each read by one subscriber on `/topics/u{i}/messages` (one asyncio
loop, personal_channels.Inboxes), on two web processes and one aggregator on one
redis-server. A producer publishes a burst: cross-topic batches (`POST /events`, a message for
every user) and runs of single POSTs, among them, for a tenth of the users, a message stamped
two minutes behind its topic's clock (past the grace), and for another tenth one stamped a
minute ahead (within `--max-future`), after which their server-stamped messages are behind
their topic's clock too. The aggregator is killed with SIGKILL at a moment of the burst and
started again; every subscriber must receive exactly its own messages, once, in publish order,
whatever their timestamps (`check_inboxes`).

Moments:

* `early` — at the first bytes of the burst's first update (user 0's, of the first batch): the
  batch still being logged, one update of it out;
* `mid-burst` — half-way through the run of single POSTs, each applied as it comes;
* `during-a-batch` — at the first bytes of user 500's update of the third batch (a raw
  subscriber of its channel kills, `moments.KillOnFirstMessage`): the aggregator dies
  publishing that batch's updates, half of them out.

Run with `-s` for each moment's figures.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from harness.live import PushsvcProcess, wait_until
from harness.raw_streams import raise_fd_limit
from harness.redis_server import RedisServer

from faults.moments import Case, KillOnFirstMessage
from faults.personal_channels import (
    ChannelProducer,
    Inboxes,
    Post,
    check_inboxes,
    user_topic,
    wait_delivered,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

USERS = 1000
SINGLES = 100
"""Users who also get a run of single POSTs (users 0-99 after the first batch, 900-999 after
the third)."""
BEHIND_S = 120.0
"""Past the 5 s grace: such a message is late for the statistics, never for the stream."""
AHEAD_S = 60.0
"""Within the 5 minute `--max-future`; the topic's clock then runs a minute ahead."""
KILLED_AT_USER = 500


def _plan(now: float) -> list[Post]:
    """Batch, singles, batch (behind and ahead), batch, singles, batch."""
    plain: dict[str, object] = {"type": "note"}

    def batch(extra: dict[int, list[dict[str, object]]] | None = None) -> Post:
        items = []
        for user in range(USERS):
            items += [(user, event) for event in (extra or {}).get(user, [])]
            items.append((user, plain))
        return Post(tuple(items))

    def singles(users: range) -> list[Post]:
        return [Post(((user, plain),), single=True) for user in users]

    skewed: dict[int, list[dict[str, object]]] = {}
    for user in range(USERS):
        if user % 10 == 3:
            skewed[user] = [{"type": "note", "ts": now - BEHIND_S}]
        elif user % 10 == 7:
            skewed[user] = [{"type": "note", "ts": now + AHEAD_S}]
    return [
        batch(),
        *singles(range(SINGLES)),
        batch(skewed),
        batch(),
        *singles(range(USERS - SINGLES, USERS)),
        batch(),
    ]


THIRD_BATCH = 1 + SINGLES + 1
"""The plan's index of the batch after the one with skewed stamps (its server-stamped messages
of the users stamped ahead are behind their topics' clocks)."""
MOMENTS = ("early", "mid-burst", "during-a-batch")
ARMED = {"early": (0, 0), "during-a-batch": (THIRD_BATCH, KILLED_AT_USER)}
"""The moments killed by a raw subscriber of a user's updates channel: armed before post k,
once what was posted before it is delivered, it kills at the first bytes of that user's next
update."""


@pytest.mark.parametrize("moment", MOMENTS)
def test_kill_9_of_the_aggregator_with_a_thousand_personal_channels(
    server: RedisServer, moment: str
) -> None:
    raise_fd_limit(4 * USERS)
    started = time.monotonic()
    with Case(server) as case:
        holder = case.start(webs=2, standbys=0)
        inboxes = Inboxes(case.stack.ports, USERS)
        inboxes.start()
        producer: ChannelProducer | None = None
        try:
            assert inboxes.connected.wait(60), "not every stream connected"
            killers: list[KillOnFirstMessage] = []

            def before(k: int) -> None:
                if moment in ARMED and k == ARMED[moment][0]:
                    assert producer is not None
                    wait_delivered(inboxes, producer.answered, 60)  # the check finds a loss
                    user = ARMED[moment][1]
                    killers.append(KillOnFirstMessage(case, user_topic(user), holder.pid))

            producer = ChannelProducer(case.stack.ports, _plan(time.time()), before)
            producer.start()
            killed = _kill_at(moment, case, holder, producer, killers)
            unapplied = _unapplied(case)
            delivered = inboxes.received()
            case.stack.start_aggregator()  # it takes the lease once the dead one's lapses
            case.holder(besides=[holder], timeout=case.takeover_timeout)
            producer.join(120)
            assert producer.failure is None, producer.failure
            assert not producer.is_alive(), "the producer did not finish"
            wait_delivered(inboxes, producer.answered, 60)
        finally:
            if producer is not None:
                producer.stop()
            inboxes.stop()
        figures = check_inboxes(inboxes, producer.answered)
    # The skewed messages went the late way for the statistics (the answers say so) and were
    # pushed all the same (the check above): a hundred far behind, a hundred after the ones ahead.
    assert producer.answered.late >= 2 * USERS // 10, producer.answered.late
    figures |= {
        "kill_after_s": round(killed - started, 1),
        "unapplied_at_kill": unapplied,
        "delivered_at_kill": delivered,
    }
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\npersonal channels, kill -9 {moment}: {json.dumps(figures)}")


def _kill_at(
    moment: str,
    case: Case,
    holder: PushsvcProcess,
    producer: ChannelProducer,
    killers: list[KillOnFirstMessage],
) -> float:
    """Kill the holder at `moment`; when (time.monotonic)."""
    if moment == "mid-burst":
        assert producer.done[SINGLES // 2].wait(60), "the single POSTs never got half-way"
    else:
        wait_until(lambda: bool(killers), timeout=120, what="the killer is armed")
        assert killers[0].fired(60), "the watched update was never published"
    case.stack.kill_aggregator(holder)
    return time.monotonic()


def _unapplied(case: Case) -> int:
    """How many entries of the log the dead holder had not published."""
    entries: Any = case.redis.xrange(case.keys.partition(0).log, f"({case.applied()}", "+")
    return len(entries)
