"""concurrency.py: AIMD per slot with a memory of where it hurt."""

from __future__ import annotations

from scrapy_gateway.core.concurrency import PROBE_SPACING, ConcurrencyControl

S = "shop.example"


def test_never_throttled_slot_has_no_limit():
    control = ConcurrencyControl(minimum=1, beta=0.5)
    assert control.limit(S) is None
    assert control.limits() == {}
    assert control.clean(S) is None
    assert control.limit(S) is None


def test_overload_cuts_by_beta():
    control = ConcurrencyControl(minimum=1, beta=0.5)
    assert control.overloaded(S, ceiling=16, sent_at=0.0, now=1.0) == 8
    assert control.limit(S) == 8
    assert control.limits() == {S: 8}


def test_cut_at_most_once_per_round_trip():
    control = ConcurrencyControl(minimum=1, beta=0.5)
    assert control.overloaded(S, 16, sent_at=0.0, now=1.0) == 8
    # Sent before the cut: caused by the old limit.
    assert control.overloaded(S, 16, sent_at=0.2, now=1.1) is None
    assert control.overloaded(S, 16, sent_at=0.99, now=1.5) is None
    assert control.limit(S) == 8
    # Sent after the cut: the new limit is still too high.
    assert control.overloaded(S, 16, sent_at=1.2, now=2.0) == 4
    assert control.overloaded(S, 16, sent_at=1.9, now=2.1) is None
    assert control.overloaded(S, 16, sent_at=2.5, now=3.0) == 2


def test_floor_at_minimum():
    control = ConcurrencyControl(minimum=3, beta=0.5)
    assert control.overloaded(S, 8, sent_at=0.0, now=1.0) == 4
    assert control.overloaded(S, 8, sent_at=2.0, now=3.0) == 3
    assert control.overloaded(S, 8, sent_at=4.0, now=5.0) is None  # already at the floor
    assert control.limit(S) == 3


def cleans_to_leave(control: ConcurrencyControl, slot: str, limit: int) -> int:
    n = 0
    while control.limit(slot) == limit:
        assert control.clean(slot) in (None, limit + 1)
        n += 1
    return n


def test_additive_increase_is_one_over_the_current_limit():
    control = ConcurrencyControl(minimum=1, beta=0.5, caution=1.0)
    control.overloaded(S, 100, sent_at=0.0, now=1.0)  # 50.0, shown as 50 until it reaches 50.5
    assert control.clean(S) is None
    assert cleans_to_leave(control, S, 50) + 1 in (25, 26)  # half a window to the rounding point
    assert control.limit(S) == 51
    assert cleans_to_leave(control, S, 51) in (50, 51, 52)  # then one unit per window of ~51

    small = ConcurrencyControl(minimum=1, beta=0.5, caution=1.0)
    small.overloaded(S, 16, sent_at=0.0, now=1.0)  # 8.0: windows of 8, not of the ceiling's 16
    assert cleans_to_leave(small, S, 8) in (4, 5)
    assert cleans_to_leave(small, S, 9) in (8, 9, 10)


def test_growth_slows_near_the_limit_that_hurt():
    control = ConcurrencyControl(minimum=1, beta=0.5, caution=8.0)
    control.overloaded(S, 32, sent_at=0.0, now=1.0)  # 16, hurt at 32
    assert cleans_to_leave(control, S, 16) in (8, 9)  # far below: full speed (half a window)
    assert cleans_to_leave(control, S, 17) in (16, 17, 18)
    while control.limit(S) < 30:
        control.clean(S)
    assert cleans_to_leave(control, S, 30) in (29, 30, 31)  # 30 + 1 < 32: still full speed
    near = cleans_to_leave(control, S, 31)  # 31 + 1 >= 32: eight times slower
    assert 8 * 29 <= near <= 8 * 32
    assert control.limit(S) is None  # reached the ceiling


def test_probes_at_small_limits_are_spaced_by_clean_responses_not_windows():
    # A probe costs about one error at any limit: at a limit of 1 or 2, `caution` windows alone
    # would be 32-64 responses, 3 % of the requests spent on probes; PROBE_SPACING keeps it <= 1 %.
    control = ConcurrencyControl(minimum=1, beta=0.5, caution=32.0)
    control.overloaded(S, 8, sent_at=0.0, now=1.0)  # 4, hurt at 8
    control.overloaded(S, 8, sent_at=2.0, now=2.0)  # 2, hurt at 4 (where it hurt again)
    assert control.limit(S) == 2
    assert cleans_to_leave(control, S, 2) in (1, 2)  # 2 + 1 < 4: full speed
    assert control.limit(S) == 3
    near = cleans_to_leave(control, S, 3)  # 3 + 1 >= 4: a unit per PROBE_SPACING responses
    assert PROBE_SPACING - 2 <= near <= PROBE_SPACING + 2


def test_recovery_to_the_ceiling_forgets_the_slot():
    control = ConcurrencyControl(minimum=1, beta=0.5, caution=1.0)
    control.overloaded(S, 4, sent_at=0.0, now=1.0)  # 2
    changes = []
    for _ in range(1000):
        change = control.clean(S)
        if change is not None:
            changes.append(change)
        if control.limit(S) is None:
            break
    assert changes == [3, 4]
    assert control.limit(S) is None
    assert control.limits() == {}
    assert control.clean(S) is None


def test_limits_lists_only_throttled_slots():
    control = ConcurrencyControl(minimum=1, beta=0.5)
    control.overloaded("a", 8, sent_at=0.0, now=1.0)
    control.overloaded("b", 1, sent_at=0.0, now=1.0)  # a ceiling of 1 cannot be cut
    control.overloaded("c", 10, sent_at=0.0, now=1.0)
    assert control.limits() == {"a": 4, "c": 5}


def test_slots_are_bounded():
    control = ConcurrencyControl(minimum=1, beta=0.5, max_slots=2)
    for slot in ("a", "b", "c"):
        control.overloaded(slot, 8, sent_at=0.0, now=1.0)
    assert control.limit("a") is None
    assert control.limits() == {"b": 4, "c": 4}


def test_default_caution_is_slow_near_the_hurt_limit():
    control = ConcurrencyControl(minimum=1, beta=0.5)
    control.overloaded(S, 8, sent_at=0.0, now=1.0)  # 4, hurt at 8
    cleans = 0
    while control.limit(S) is not None and cleans < 10_000:
        control.clean(S)
        cleans += 1
    # 4 -> 7 takes about 4 + 5 + 6 cleans; the last unit near the hurt limit takes caution * 7.
    assert control.limit(S) is None
    assert cleans > 7 * control.caution


def test_slow_start_doubles_per_round_trip_until_the_first_overload():
    control = ConcurrencyControl(1, 0.7, initial=2)
    assert control.begin(S, 32) == 2
    assert control.begin(S, 32) is None  # once per slot
    limits = [control.clean(S) for _ in range(6)]
    assert limits == [3, 4, 5, 6, 7, 8]  # +1 per clean response: x2 per round trip
    assert control.limits() == {}  # slow start is not a throttle
    # The last round trip doubled the limit: the capacity is between 4 and 8, so back to 4.
    assert control.overloaded(S, 32, sent_at=1.0, now=1.0) == 4
    assert control.clean(S) is None  # past slow start: +1/limit per clean response
    # ... and the step just above the half is probed cautiously.
    cleans = 0
    while control.limit(S) == 4:
        control.clean(S)
        cleans += 1
    assert cleans > 4 * control.caution / 2  # limits round half up: 4.5 already probes 5


def test_requests_long_unanswered_free_their_rooms_until_the_slot_hears_back():
    control = ConcurrencyControl(1, 0.7, initial=2)
    assert control.begin(S, 8) == 2
    assert control.late(S, 1) == 3  # one of the first two has waited too long: its room goes
    assert control.late(S, 1) is None  # the same one, asked again at the next look
    assert control.late(S, 2) == 4
    assert control.late(S, 9) == 8  # never past the user's limit
    other = "other.example"
    assert control.begin(other, 8) == 2
    assert control.clean(other) == 3  # heard back: slow start's own pace from here
    assert control.late(other, 2) is None
    third = "third.example"
    control.begin(third, 8)
    control.doubtful(third)  # a failure came back: the slot has heard, too
    assert control.late(third, 2) is None
    assert control.late("never.example", 2) is None  # not in slow start: the user's limit rules


def test_hurt_again_at_the_same_place_steps_back_to_the_limit_that_held():
    control = ConcurrencyControl(1, 0.7, initial=0)
    assert control.overloaded(S, 16, sent_at=0.0, now=1.0) == 11  # 16 * 0.7, rounded half up
    while control.limit(S) == 11:
        control.clean(S)
    assert control.overloaded(S, 16, sent_at=2.0, now=2.0) == 8  # hurt at 12 now: 12 * 0.7
    cleans = 0
    while control.limit(S) != 12:
        control.clean(S)
        cleans += 1
    assert cleans > 11 * control.caution  # the step to where it hurt is probed slowly
    assert control.overloaded(S, 16, sent_at=3.0, now=3.0) == 11  # hurt at 12 again: back to 11


def test_a_doubtful_failure_above_what_went_well_frees_no_room_in_slow_start():
    control = ConcurrencyControl(1, 0.7, initial=2)
    control.begin(S, 32)
    assert not control.growing(S)  # at its first limit: nothing to doubt yet
    # Four requests at a time went well (sent with 1 to 4 in flight): the limit doubled to 8.
    assert [control.clean(S, load) for load in (1, 2, 3, 4, 4, 4)] == [3, 4, 5, 6, 7, 8]
    assert control.growing(S)
    # Failures nobody can blame yet (fresh paths) of requests sent with 5 to 7 in flight: each
    # takes the room it freed. One sent with 3 in flight (a bad proxy, where load went well) is
    # no overshoot: it costs nothing.
    assert [control.doubtful(S, load) for load in (5, 6, 7)] == [7, 6, 5]
    assert control.doubtful(S, 3) is None
    assert control.doubtful(S, None) == 4  # unknown load: taken for more
    assert control.clean(S, 4) == 5  # slow start goes on: the next clean response gives it back
    # The overload that ends slow start: below the fewest in flight that failed (5), which is
    # more than half the limit (5 / 2).
    assert control.overloaded(S, 32, sent_at=1.0, now=1.0) == 4
    assert not control.growing(S)
    assert control.doubtful(S, 9) is None  # past slow start: the judge's probing rule decides


def test_slow_start_ends_below_the_fewest_in_flight_that_failed_not_at_half_the_limit():
    # An origin that fails fast past 16 answers 17 and 18 at once, before the window's other
    # responses arrive: halving the limit reached (18) would take it to 9.
    control = ConcurrencyControl(1, 0.7, initial=2)
    control.begin(S, 32)
    for load in range(1, 17):
        control.clean(S, min(load, 16))
    assert [control.doubtful(S, 17), control.doubtful(S, 18)] == [17, 16]
    control.clean(S, 16)  # 17 again
    assert control.overloaded(S, 32, sent_at=1.0, now=1.0) == 16
    unknown = ConcurrencyControl(1, 0.7, initial=2)  # without loads (GatewayDownloader not used)
    unknown.begin(S, 32)
    for _ in range(6):
        unknown.clean(S)
    assert unknown.overloaded(S, 32, sent_at=1.0, now=1.0) == 4  # half of 8


def test_doubtful_failures_never_take_slow_start_below_its_first_limit():
    control = ConcurrencyControl(1, 0.7, initial=2)
    control.begin(S, 16)
    control.clean(S, 1)  # 3
    assert control.doubtful(S, 3) == 2
    assert control.doubtful(S, 3) is None  # already at slow start's first limit
    assert control.limit(S) == 2
    assert control.doubtful("unseen", 3) is None
    for _ in range(200):
        control.clean(S)
    assert control.limit(S) is None  # slow start over at the user's own limit


def test_slow_start_ends_at_the_users_limit_and_not_below_it():
    control = ConcurrencyControl(1, 0.7, initial=2)
    assert control.begin("tiny", 2) is None  # nothing to start below
    assert control.begin(S, 4) == 2
    assert [control.clean(S) for _ in range(2)] == [3, 4]
    assert control.limit(S) == 4 and control.limits() == {}  # the user's own limit, still watched
    assert control.overloaded(S, 4, sent_at=1.0, now=1.0) == 2  # overshot within the window: halved
    control.begin("fresh", 4)
    for _ in range(2 + 4):  # to the user's limit, then a whole window of clean responses there
        control.clean("fresh")
    assert control.limit("fresh") is None  # slow start is over: the user's own limit rules again


def test_an_outage_undoes_the_cuts_since_the_last_clean_response():
    control = ConcurrencyControl(1, 0.7, initial=0)
    control.overloaded(S, 8, sent_at=0.0, now=1.0)  # 5.6 -> 6
    control.clean(S)
    calm = control.limit(S)
    control.overloaded(S, 8, sent_at=2.0, now=3.0)
    control.overloaded(S, 8, sent_at=4.0, now=5.0)
    assert control.limit(S) < calm
    assert control.outage(S) == calm


def test_an_outage_of_a_domain_that_never_answered_well_undoes_its_cuts_back_to_slow_start():
    """Not to the user's limit: the requests queued for the slot would all leave at once, into
    the outage (the gate holds only those that have not been admitted yet)."""
    control = ConcurrencyControl(1, 0.5, initial=2)
    control.begin(S, 8)
    assert control.overloaded(S, 8, sent_at=0.0, now=0.1) == 1
    assert control.outage(S) == 2
    assert control.starting(S)  # and it grows from there once the origin is back
    fresh = ConcurrencyControl(1, 0.5, initial=2)
    fresh.begin(S, 8)
    assert fresh.outage(S) is None  # nothing cut: nothing to undo
    assert fresh.limit(S) == 2


def test_the_end_of_slow_start_never_raises_the_limit():
    control = ConcurrencyControl(1, 0.7, initial=2)
    control.begin(S, 32)
    for load in range(1, 9):
        control.clean(S, load)  # 10, held 8
    for _ in range(6):
        control.doubtful(S, 20)  # held back to 4 by failures sent with 20 in flight
    assert control.limit(S) == 4
    assert control.overloaded(S, 32, sent_at=1.0, now=1.0) is None  # 19 would be a raise: stays 4
    assert control.limit(S) == 4


def test_a_cut_whose_failure_turned_out_the_proxys_is_undone():
    control = ConcurrencyControl(minimum=1, beta=0.5, initial=0)
    assert control.overloaded("s", 8, sent_at=0.0, now=1.0, by="p1") == 4
    control.clean("s")
    assert control.overturned("s", "p2") is None  # not the path that made it
    assert control.overturned("s", "p1") == 8  # back to the user's limit: the slot is free again
    assert control.limit("s") is None
    assert control.overturned("s", "p1") is None  # once


def test_a_cut_that_another_cut_followed_is_undone_with_it_only():
    control = ConcurrencyControl(minimum=1, beta=0.5, initial=0)
    control.overloaded("s", 8, sent_at=0.0, now=1.0, by="p1")
    control.overloaded("s", 8, sent_at=2.0, now=3.0, by="p2")
    assert control.overturned("s", "p1") is None  # p2's cut stands, for now
    assert control.limit("s") == 2
    assert control.overturned("s", "p2") == 8  # both were false: a chain of bans at the start
    assert control.limit("s") is None


def test_a_cut_that_stands_keeps_the_ones_before_it():
    control = ConcurrencyControl(minimum=1, beta=0.5, initial=0)
    control.overloaded("s", 8, sent_at=0.0, now=1.0, by="p1")
    control.overloaded("s", 8, sent_at=2.0, now=3.0, by="p2")
    assert control.overturned("s", "p2") == 4  # back to before p2's cut, not before p1's


def test_an_overturned_cut_in_slow_start_resumes_slow_start():
    control = ConcurrencyControl(minimum=1, beta=0.7, initial=2)
    control.begin("s", 32)
    for _ in range(6):
        control.clean("s", 1)
    assert control.limit("s") == 8
    control.overloaded("s", 32, sent_at=0.0, now=1.0, load=1, by="p1")
    assert not control.starting("s")
    assert control.overturned("s", "p1") == 8
    assert control.starting("s")


def test_only_the_cuts_of_the_overturned_run_are_undone():
    control = ConcurrencyControl(minimum=1, beta=0.5, initial=0)
    control.overloaded("s", 16, sent_at=0.0, now=1.0, by="p1")  # an old cut, through p1, that stood
    control.overloaded("s", 16, sent_at=5.0, now=6.0, by="p1")  # the run that turns out p1's
    control.overloaded("s", 16, sent_at=7.0, now=8.0, by="p1")
    assert control.limit("s") == 2
    assert control.overturned("s", "p1", since=5.0) == 8  # both of the run's cuts; not the old one


def test_failures_at_the_minimum_do_not_push_the_cuts_that_got_it_there_out_of_the_undo():
    """Six banned addresses at a crawl's start: the limit goes 8 -> 1 in a few cuts, then their
    next failures find it at the minimum. Once all turn out the addresses' own, it is back at 8."""
    control = ConcurrencyControl(minimum=1, beta=0.5, initial=0)
    now = 1.0
    for by in ("p1", "p2", "p3"):  # 8 -> 4 -> 2 -> 1
        control.overloaded("s", 8, sent_at=now - 0.5, now=now, by=by)
        now += 1.0
    assert control.limit("s") == 1
    for i in range(12):  # at the minimum: each is a cut of nothing
        control.overloaded("s", 8, sent_at=now - 0.5, now=now, by=f"p{4 + i % 3}")
        now += 1.0
    for by in ("p1", "p2", "p3", "p4", "p5", "p6"):
        control.overturned("s", by)
    assert control.limit("s") is None  # the user's 8 again


def test_an_undo_never_skips_an_overload_that_stands_at_the_minimum():
    control = ConcurrencyControl(minimum=1, beta=0.5, initial=0)
    now = 1.0
    for by in ("p1", "p2", "p3"):  # 8 -> 4 -> 2 -> 1
        control.overloaded("s", 8, sent_at=now - 0.5, now=now, by=by)
        now += 1.0
    for by in ("p4", "p4", "p5"):  # at the minimum: real overloads, through paths that stay clean
        assert control.overloaded("s", 8, sent_at=now - 0.5, now=now, by=by) is None
        now += 1.0
    assert control.overturned("s", "p3") is None  # the origin failed at 1 since: it stays 1
    assert control.overturned("s", "p4") is None  # and p5's still stands
    assert control.limit("s") == 1
    assert control.overturned("s", "p5") == 2  # back to before p3's cut; p2's stands
    assert control.overturned("s", "p2") == 4


def test_a_floor_mark_keeps_a_paths_first_overload_there():
    # p4 overloaded the origin at the minimum long ago (a real overload), and again lately, in a
    # run that turned out its own: the old one still stands.
    control = ConcurrencyControl(minimum=1, beta=0.5, initial=0)
    for now, by in ((1.0, "p1"), (2.0, "p1"), (3.0, "p1")):  # 8 -> 1
        control.overloaded("s", 8, sent_at=now - 0.5, now=now, by=by)
    control.overloaded("s", 8, sent_at=9.5, now=10.0, by="p4")
    control.overloaded("s", 8, sent_at=19.5, now=20.0, by="p4")
    assert control.overturned("s", "p1") is None
    assert control.overturned("s", "p4", since=19.0) is None
    assert control.limit("s") == 1


def test_a_start_up_cut_that_the_first_clean_response_contradicts_is_undone() -> None:
    # Three bad proxies answer first at slow start's 2: a cut to 1, before anything went well.
    control = ConcurrencyControl(minimum=1, beta=0.7, initial=2)
    control.begin(S, 16)
    assert control.overloaded(S, 16, sent_at=0.0, now=0.04, load=1) == 1
    assert not control.starting(S)
    # The first clean response was sent with 2 in flight, the load that cut said would hurt.
    assert control.clean(S, load=2) == 3
    assert control.starting(S) and not control.probing(S)


def test_a_start_up_cut_stands_when_the_first_clean_response_went_out_alone() -> None:
    # An origin that serves one at a time fails the second of slow start's two requests.
    control = ConcurrencyControl(minimum=1, beta=0.7, initial=2)
    control.begin(S, 16)
    assert control.overloaded(S, 16, sent_at=0.0, now=0.01, load=2) == 1
    assert control.clean(S, load=1) is None
    assert control.limit(S) == 1 and control.probing(S) is False and not control.starting(S)
    # Once something went well, a clean response at the load that hurt is the probe, not an undo.
    control.clean(S, load=2)
    assert not control.starting(S)


def test_a_cut_after_the_slot_answered_well_is_never_undone_by_a_clean_response() -> None:
    control = ConcurrencyControl(minimum=1, beta=0.5, initial=2)
    control.begin(S, 16)
    control.clean(S, load=1)
    control.clean(S, load=2)  # 4
    assert control.overloaded(S, 16, sent_at=0.0, now=1.0, load=4) == 3
    assert control.clean(S, load=4) is None
    assert control.limit(S) == 3 and not control.starting(S)
