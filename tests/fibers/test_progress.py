"""Behaviour of the replaying Stream and of ProgressTracker: positions, trees, events, pickling."""

from __future__ import annotations

import itertools
import logging
import pickle
from typing import Any

import dill
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibers._progress import Change, Position, ProgressTracker, Rendering, Step, Structural
from fibers._stream import Stream

UNSTARTED = ProgressTracker.UNSTARTED
STARTING = ProgressTracker.STARTING
DONE = ProgressTracker.DONE


class Simple:
    ONE = Step("One")
    TWO = Step("Two")
    THREE = Step("Three")
    FOUR = Step("Four")


class Child:
    AYY = Step("Ayy")
    BEE = Step("Bee")
    SEA = Step("Sea")


class Baby:
    UNOS = Step("Unos")
    DOS = Step("Dos")
    TRES = Step("Tres")


MODULE_LEVEL_STEP = Step("Module level")


def simple() -> ProgressTracker:
    return ProgressTracker(Simple.ONE, Simple.TWO, Simple.THREE, Simple.FOUR)


def child() -> ProgressTracker:
    return ProgressTracker(Child.AYY, Child.BEE, Child.SEA)


def baby() -> ProgressTracker:
    return ProgressTracker(Baby.UNOS, Baby.DOS, Baby.TRES)


class Recorder:
    """Records every notification of a stream as ("next", v), ("error", e) or ("completed",)."""

    def __init__(self, stream: Stream[Any]) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.subscription = stream.subscribe(
            lambda v: self.events.append(("next", v)),
            lambda e: self.events.append(("error", e)),
            lambda: self.events.append(("completed",)),
        )

    @property
    def values(self) -> list[Any]:
        return [e[1] for e in self.events if e[0] == "next"]


# -- Stream ---------------------------------------------------------------------------------


def test_stream_replays_history_to_a_late_subscriber_then_delivers_live_values() -> None:
    stream: Stream[int] = Stream()
    early = Recorder(stream)
    stream.publish(1)
    stream.publish(2)
    late = Recorder(stream)
    assert late.values == [1, 2]
    stream.publish(3)
    assert early.values == late.values == [1, 2, 3]
    assert stream.values == [1, 2, 3]


def test_stream_replays_completion_after_the_history() -> None:
    stream: Stream[str] = Stream()
    stream.publish("a")
    stream.complete()
    assert Recorder(stream).events == [("next", "a"), ("completed",)]


def test_stream_replays_failure_after_the_history() -> None:
    stream: Stream[str] = Stream()
    boom = ValueError("boom")
    stream.publish("a")
    stream.fail(boom)
    assert Recorder(stream).events == [("next", "a"), ("error", boom)]
    assert stream.has_ended
    assert stream.error is boom


def test_stream_failure_without_error_handler_ends_silently() -> None:
    stream: Stream[int] = Stream()
    seen: list[int] = []
    subscription = stream.subscribe(seen.append)
    stream.fail(RuntimeError("x"))
    assert seen == []
    assert not subscription.active


def test_stream_refuses_to_publish_or_end_twice_after_it_ended() -> None:
    stream: Stream[int] = Stream()
    stream.complete()
    with pytest.raises(RuntimeError, match="already ended"):
        stream.publish(1)
    with pytest.raises(RuntimeError, match="already ended"):
        stream.fail(ValueError())


def test_stream_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    stream: Stream[int] = Stream()
    recorder = Recorder(stream)
    stream.publish(1)
    recorder.subscription.unsubscribe()
    recorder.subscription.unsubscribe()
    stream.publish(2)
    assert recorder.values == [1]
    assert not recorder.subscription.active


def test_stream_publish_from_a_callback_keeps_publication_order_for_every_subscriber() -> None:
    stream: Stream[int] = Stream()
    first: list[int] = []
    second: list[int] = []

    def echo(value: int) -> None:
        first.append(value)
        if value < 3:
            stream.publish(value + 10)

    stream.subscribe(echo)
    stream.subscribe(second.append)
    stream.publish(1)
    assert first == second == [1, 11]


def test_stream_subscribe_from_a_callback_replays_once() -> None:
    stream: Stream[int] = Stream()
    nested: list[int] = []

    def subscribe_once(value: int) -> None:
        if value == 1:
            stream.subscribe(nested.append)

    stream.subscribe(subscribe_once)
    stream.publish(1)
    stream.publish(2)
    assert nested == [1, 2]


def test_stream_drops_a_raising_subscriber_and_keeps_serving_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream: Stream[int] = Stream()
    good: list[int] = []

    def bad(value: int) -> None:
        raise RuntimeError("observer bug")

    bad_subscription = stream.subscribe(bad)
    stream.subscribe(good.append)
    with caplog.at_level(logging.ERROR, logger="fibers._stream"):
        stream.publish(1)
    stream.publish(2)
    assert good == [1, 2]
    assert not bad_subscription.active
    assert "unsubscribed" in caplog.text


# -- positions ------------------------------------------------------------------------------


def test_steps_are_framed_by_the_sentinels_and_start_unstarted() -> None:
    pt = simple()
    user_steps = [Simple.ONE, Simple.TWO, Simple.THREE, Simple.FOUR]
    assert pt.steps == [UNSTARTED, STARTING, *user_steps, DONE]
    assert pt.current_step == UNSTARTED
    assert pt.step_index == 0
    assert not pt.has_ended
    assert [s.label for s in (UNSTARTED, STARTING, DONE)] == ["Unstarted", "Starting", "Done"]


def test_duplicate_step_labels_are_refused_naming_the_label() -> None:
    with pytest.raises(ValueError, match="duplicate step 'Two'"):
        ProgressTracker(Simple.ONE, Simple.TWO, Step("Two"))
    with pytest.raises(ValueError, match=r"duplicate step 'Done'.*reserved"):
        ProgressTracker(Step("Done"))


def test_constructor_refuses_non_steps() -> None:
    with pytest.raises(TypeError, match="takes Step objects, got 'One'"):
        ProgressTracker("One")  # type: ignore[arg-type]


def test_next_step_walks_every_step_and_returns_it() -> None:
    pt = simple()
    walked = [pt.next_step() for _ in range(6)]
    assert walked == [STARTING, Simple.ONE, Simple.TWO, Simple.THREE, Simple.FOUR, DONE]
    assert pt.has_ended


def test_position_changes_are_published_in_order() -> None:
    pt = simple()
    changes = Recorder(pt.changes)
    pt.current_step = Simple.ONE
    pt.current_step = Simple.ONE  # same step: no-op
    pt.current_step = Simple.THREE
    pt.current_step = Simple.TWO
    assert changes.values == [
        Position(pt, Simple.ONE),
        Position(pt, Simple.THREE),
        Position(pt, Simple.TWO),
    ]


def test_a_step_of_another_tracker_is_refused_naming_it_and_listing_the_steps() -> None:
    pt = simple()
    with pytest.raises(ValueError) as raised:
        pt.current_step = Child.BEE
    assert str(raised.value) == (
        "step 'Bee' is not in this progress tracker; its steps are: "
        "'Unstarted', 'Starting', 'One', 'Two', 'Three', 'Four', 'Done'"
    )
    with pytest.raises(TypeError, match="expected a Step, got 'One'"):
        pt.current_step = "One"  # type: ignore[assignment]


def test_a_tracker_cannot_move_once_done() -> None:
    pt = simple()
    pt.current_step = DONE
    pt.current_step = DONE  # same step: still a no-op
    with pytest.raises(ValueError, match=r"^cannot rewind a progress tracker once it has ended$"):
        pt.current_step = Simple.ONE
    with pytest.raises(ValueError, match="cannot rewind"):
        pt.next_step()


def test_done_completes_the_streams_of_that_tracker_only() -> None:
    pt, pt2 = simple(), child()
    pt.set_child_tracker(Simple.ONE, pt2)
    pt.current_step = Simple.ONE
    pt2.current_step = DONE
    assert pt2.changes.has_ended and pt2.steps_tree_changes.has_ended
    assert not pt.changes.has_ended
    pt.current_step = DONE
    top = Recorder(pt.changes)
    assert top.events[-2:] == [("next", Position(pt, DONE)), ("completed",)]
    assert pt.steps_tree_index_changes.has_ended


# -- flattened tree and its streams ---------------------------------------------------------


def test_steps_tree_index_is_minus_one_until_started_but_its_stream_starts_at_zero() -> None:
    pt = simple()
    assert pt.steps_tree_index == -1
    assert pt.steps_tree_index_changes.values == [0]  # the row it starts at, as in Corda
    pt.current_step = STARTING
    assert pt.steps_tree_index_changes.values == [0]
    assert pt.steps_tree_changes.values == [
        [(0, "Starting"), (0, "One"), (0, "Two"), (0, "Three"), (0, "Four"), (0, "Done")]
    ]


def test_steps_tree_index_counts_children_steps() -> None:
    pt, pt2 = simple(), child()
    pt.set_child_tracker(Simple.TWO, pt2)
    index = Recorder(pt.steps_tree_index_changes)
    tree = Recorder(pt.steps_tree_changes)

    pt.current_step = Simple.ONE
    pt.current_step = Simple.TWO
    pt2.current_step = Child.BEE
    pt.current_step = Simple.THREE

    assert index.values == [0, 1, 2, 4, 6]
    plain = [(0, "Starting"), (0, "One"), (0, "Two"), (0, "Three"), (0, "Four"), (0, "Done")]
    assert tree.values == [
        plain,
        [
            (0, "Starting"), (0, "One"), (0, "Two"),
            (1, "Ayy"), (1, "Bee"), (1, "Sea"),
            (0, "Three"), (0, "Four"), (0, "Done"),
        ]
    ]  # fmt: skip
    assert pt.all_steps[6] == (0, Simple.THREE)


def test_a_new_index_subscriber_first_gets_the_current_index_mid_flow() -> None:
    pt, pt2 = simple(), child()
    pt.set_child_tracker(Simple.TWO, pt2)
    pt.current_step = Simple.ONE
    pt.current_step = Simple.TWO
    index = Recorder(pt.steps_tree_index_changes)
    assert index.values[-1] == pt.steps_tree_index == 2
    pt2.current_step = Child.AYY
    assert index.values == [0, 1, 2, 3]


def test_steps_tree_index_counts_two_levels_of_children_steps() -> None:
    pt, pt2, pt3 = simple(), child(), baby()
    pt.set_child_tracker(Simple.FOUR, pt2)
    pt2.set_child_tracker(Child.SEA, pt3)
    index = Recorder(pt.steps_tree_index_changes)
    assert pt.all_steps == [
        (0, STARTING), (0, Simple.ONE), (0, Simple.TWO), (0, Simple.THREE), (0, Simple.FOUR),
        (1, Child.AYY), (1, Child.BEE), (1, Child.SEA),
        (2, Baby.UNOS), (2, Baby.DOS), (2, Baby.TRES),
        (0, DONE),
    ]  # fmt: skip

    pt.current_step = Simple.ONE
    pt.current_step = Simple.FOUR
    pt2.current_step = Child.SEA
    pt3.current_step = Baby.UNOS
    pt3.current_step = STARTING  # rewinding the grandchild out of the list: SEA is deepest
    pt3.current_step = Baby.DOS
    pt.current_step = Simple.TWO

    assert index.values == [0, 1, 4, 7, 8, 7, 9, 2]  # no intermediate 4 while rewinding


def test_children_added_and_removed_update_the_tree_and_publish_structural_changes() -> None:
    pt, pt2, pt3 = simple(), child(), baby()
    pt.current_step = Simple.ONE
    changes = Recorder(pt.changes)
    tree = Recorder(pt.steps_tree_changes)
    index = Recorder(pt.steps_tree_index_changes)

    pt.set_child_tracker(Simple.ONE, pt2)
    pt2.current_step = Child.AYY
    pt2.set_child_tracker(Child.AYY, pt3)
    pt3.current_step = Baby.UNOS
    assert pt.remove_child_tracker(Simple.ONE) is pt2

    assert changes.values == [
        Position(pt, Simple.ONE),
        Structural(pt, Simple.ONE),
        Position(pt2, Child.AYY),
        Structural(pt2, Child.AYY),
        Position(pt3, Baby.UNOS),
        Structural(pt, Simple.ONE),
    ]
    plain = [(0, "Starting"), (0, "One"), (0, "Two"), (0, "Three"), (0, "Four"), (0, "Done")]
    with_child = [*plain[:2], (1, "Ayy"), (1, "Bee"), (1, "Sea"), *plain[2:]]
    with_baby = [*with_child[:3], (2, "Unos"), (2, "Dos"), (2, "Tres"), *with_child[3:]]
    assert tree.values == [plain, with_child, with_baby, plain]
    assert index.values == [0, 1, 2, 3, 1]  # a new subscriber gets the history since creation
    assert pt2.parent is None
    assert pt.get_child_tracker(Simple.ONE) is None
    assert pt.remove_child_tracker(Simple.ONE) is None  # nothing left: no event
    assert len(changes.values) == 6


def test_rewinding_removes_the_children_of_every_step_rolled_back() -> None:
    pt, for_two, for_three, for_four = simple(), child(), baby(), child()
    pt.set_child_tracker(Simple.TWO, for_two)
    pt.set_child_tracker(Simple.THREE, for_three)
    pt.set_child_tracker(Simple.FOUR, for_four)  # not reached: kept
    pt.current_step = Simple.THREE
    changes = Recorder(pt.changes)
    tree = Recorder(pt.steps_tree_changes)
    del changes.events[:], tree.events[:]

    pt.current_step = Simple.TWO

    assert changes.values == [
        Structural(pt, Simple.THREE),
        Structural(pt, Simple.TWO),
        Position(pt, Simple.TWO),
    ]
    assert pt.get_child_tracker(Simple.TWO) is None
    assert pt.get_child_tracker(Simple.THREE) is None
    assert pt.get_child_tracker(Simple.FOUR) is for_four
    assert for_two.parent is None and for_three.parent is None
    assert len(tree.values) == 1  # one new tree for the whole move, not one per removal


class StepWithChild(Step):
    def child_tracker(self) -> ProgressTracker:
        return child()


def test_a_step_declaring_a_child_attaches_it_when_current_structural_before_position() -> None:
    with_child = StepWithChild("Delegating")
    pt = ProgressTracker(Simple.ONE, with_child)
    changes = Recorder(pt.changes)
    assert pt.get_child_tracker(with_child) is None

    pt.current_step = with_child
    attached = pt.get_child_tracker(with_child)
    assert attached is not None and attached.parent is pt
    assert changes.values == [Structural(pt, with_child), Position(pt, with_child)]

    pt.current_step = Simple.ONE  # rolls back through the step: child dropped
    pt.current_step = with_child  # and a fresh one attached
    fresh = pt.get_child_tracker(with_child)
    assert fresh is not None and fresh is not attached


def test_child_and_grandchild_events_bubble_up_to_every_ancestor() -> None:
    pt, pt2, pt3 = simple(), child(), baby()
    pt.set_child_tracker(Simple.ONE, pt2)
    pt2.set_child_tracker(Child.AYY, pt3)
    top, middle = Recorder(pt.changes), Recorder(pt2.changes)
    del top.events[:], middle.events[:]

    pt3.current_step = Baby.DOS

    assert top.values == middle.values == [Position(pt3, Baby.DOS)]
    assert pt3.top_level_tracker is pt
    assert pt3.parent is pt2
    assert pt.parent is None and pt.top_level_tracker is pt


def test_a_subscriber_attaching_mid_flow_sees_every_event() -> None:
    pt, pt2 = simple(), child()
    early = Recorder(pt.changes)
    pt.current_step = STARTING
    pt.current_step = Simple.ONE
    pt.set_child_tracker(Simple.ONE, pt2)
    pt2.current_step = Child.AYY
    late = Recorder(pt.changes)
    late_index = Recorder(pt.steps_tree_index_changes)
    pt2.current_step = Child.BEE
    pt.current_step = DONE

    assert late.events == early.events
    assert len(early.values) == 6 and early.events[-1] == ("completed",)
    assert late_index.values == [0, 1, 2, 3, 8]


def test_relabelling_a_step_publishes_rendering_through_every_tracker_containing_it() -> None:
    step = Step("Fetching")
    first, second = ProgressTracker(step), ProgressTracker(step)
    parent = simple()
    parent.set_child_tracker(Simple.ONE, second)
    seen_first, seen_parent = Recorder(first.changes), Recorder(parent.changes)
    tree = Recorder(parent.steps_tree_changes)
    del seen_parent.events[:], tree.events[:]

    step.label = "Fetching 3/10"
    step.label = "Fetching 3/10"  # unchanged: nothing published

    assert seen_first.values == [Rendering(first, step)]
    assert seen_parent.values == [Rendering(second, step)]
    assert tree.values == [
        [(0, "Starting"), (0, "One"), (1, "Fetching 3/10"), (0, "Two"), (0, "Three"),
         (0, "Four"), (0, "Done")]
    ]  # fmt: skip
    assert step.id == "Fetching"


def test_relabelling_a_step_of_a_finished_child_still_reaches_its_parent() -> None:
    step = Step("Fetched")
    pt, done_child = simple(), ProgressTracker(step)
    pt.set_child_tracker(Simple.ONE, done_child)
    done_child.current_step = DONE
    changes = Recorder(pt.changes)
    del changes.events[:]
    step.label = "Fetched 10 files"
    assert changes.values == [Rendering(done_child, step)]


def test_sentinels_cannot_be_relabelled() -> None:
    with pytest.raises(AttributeError, match="cannot be relabelled"):
        DONE.label = "Finished"


def test_set_child_tracker_refuses_cycles_and_foreign_steps() -> None:
    pt, pt2 = simple(), child()
    pt.set_child_tracker(Simple.ONE, pt2)
    with pytest.raises(ValueError, match="its own descendant"):
        pt2.set_child_tracker(Child.AYY, pt)
    with pytest.raises(ValueError, match="its own descendant"):
        pt.set_child_tracker(Simple.TWO, pt)
    with pytest.raises(ValueError, match="step 'Ayy' is not in this progress tracker"):
        pt.set_child_tracker(Child.AYY, baby())


def test_set_child_tracker_moves_a_tracker_attached_elsewhere() -> None:
    pt, pt2 = simple(), child()
    pt.set_child_tracker(Simple.ONE, pt2)
    pt.set_child_tracker(Simple.ONE, pt2)  # already there: no-op
    changes = Recorder(pt.changes)
    del changes.events[:]

    pt.set_child_tracker(Simple.TWO, pt2)

    assert changes.values == [Structural(pt, Simple.ONE), Structural(pt, Simple.TWO)]
    assert pt.get_child_tracker(Simple.ONE) is None
    assert pt.get_child_tracker(Simple.TWO) is pt2


def test_replacing_a_child_detaches_the_previous_one() -> None:
    pt, old, new = simple(), child(), child()
    pt.set_child_tracker(Simple.ONE, old)
    pt.set_child_tracker(Simple.ONE, new)
    assert old.parent is None
    assert pt.get_child_tracker(Simple.ONE) is new


# -- errors ---------------------------------------------------------------------------------


def test_end_with_error_fails_the_streams_and_ends_the_tracker() -> None:
    pt = simple()
    pt.current_step = Simple.TWO
    boom = ValueError("boom")
    changes, index = Recorder(pt.changes), Recorder(pt.steps_tree_index_changes)

    pt.end_with_error(boom)

    assert changes.events[-1] == ("error", boom)
    assert index.events[-1] == ("error", boom)
    assert pt.has_ended and pt.error is boom and pt.current_step == Simple.TWO
    with pytest.raises(ValueError, match="cannot rewind"):
        pt.current_step = Simple.TWO
    with pytest.raises(ValueError, match="cannot rewind"):
        pt.next_step()
    with pytest.raises(ValueError, match="already ended with ValueError"):
        pt.end_with_error(RuntimeError())
    with pytest.raises(ValueError, match="cannot change the children"):
        pt.set_child_tracker(Simple.TWO, child())


def test_end_with_error_after_done_is_refused() -> None:
    pt = simple()
    pt.current_step = DONE
    with pytest.raises(ValueError, match="already ended at Done"):
        pt.end_with_error(ValueError())


def test_a_failing_child_leaves_its_parent_open_and_asks_it_to_rerender() -> None:
    pt, pt2 = simple(), child()
    pt.current_step = Simple.ONE
    pt.set_child_tracker(Simple.ONE, pt2)
    pt2.current_step = Child.BEE
    changes = Recorder(pt.changes)
    del changes.events[:]

    pt2.end_with_error(KeyError("missing"))

    assert changes.events == [("next", Rendering(pt2, Child.BEE))]
    pt.current_step = Simple.TWO  # the parent flow caught the sub-flow's error and carries on
    assert changes.values[-1] == Position(pt, Simple.TWO)


# -- identity across checkpoints ------------------------------------------------------------


def test_a_class_level_step_survives_pickling_as_the_same_object() -> None:
    assert pickle.loads(pickle.dumps(Simple.TWO)) is Simple.TWO
    assert pickle.loads(pickle.dumps(UNSTARTED)) is UNSTARTED
    assert dill.loads(dill.dumps(Child.SEA)) is Child.SEA


def test_other_steps_survive_pickling_as_equal_copies_with_their_label() -> None:
    step = Step("Downloading", id="download")
    step.label = "Downloading 2/3"
    for restored in (pickle.loads(pickle.dumps(step)), dill.loads(dill.dumps(step))):
        assert restored == step and hash(restored) == hash(step)
        assert restored.label == "Downloading 2/3" and restored.id == "download"
    assert pickle.loads(pickle.dumps(MODULE_LEVEL_STEP)) == MODULE_LEVEL_STEP


def test_steps_are_equal_by_type_and_id_not_label() -> None:
    assert Step("A") == Step("A")
    assert Step("A", id="x") == Step("B", id="x")
    assert Step("A") != StepWithChild("A")
    assert Step("A") != Step("B")
    assert Step("Done") != DONE
    assert repr(Step("A", id="x")) == "Step('A', id='x')"
    assert repr(STARTING) == "ProgressTracker.STARTING"


@pytest.mark.parametrize("codec", [pickle, dill], ids=["pickle", "dill"])
def test_a_tracker_pickled_mid_flow_keeps_its_position_and_children(codec: Any) -> None:
    pt, pt2 = simple(), child()
    pt.current_step = Simple.TWO
    pt.set_child_tracker(Simple.TWO, pt2)
    pt2.current_step = Child.BEE
    early = Recorder(pt.changes)

    restored: ProgressTracker = codec.loads(codec.dumps(pt))

    restored_child = restored.get_child_tracker(Simple.TWO)
    assert restored_child is not None and restored_child.parent is restored
    assert restored.current_step == Simple.TWO and restored_child.current_step == Child.BEE
    assert restored.steps_tree == pt.steps_tree
    assert restored.steps_tree_index == 4
    # Streams are transient: a restored tracker's start from its current state.
    assert restored.changes.values == [Position(restored, Simple.TWO)]
    assert restored.steps_tree_index_changes.values == [4]
    # The class-level constants of the flow keep driving it.
    restored_child.current_step = Child.SEA
    restored.current_step = Simple.THREE
    assert restored.steps_tree_index_changes.values == [4, 5, 6]
    assert len(early.events) == 3  # the original's subscribers are not carried over


def test_a_restored_tracker_moved_before_anyone_subscribed_publishes_each_change_once() -> None:
    pt, pt2 = simple(), child()
    pt.current_step = Simple.TWO
    pt.set_child_tracker(Simple.TWO, pt2)
    restored_child: ProgressTracker = pickle.loads(pickle.dumps(pt2))  # the parent comes along
    restored = restored_child.top_level_tracker

    restored_child.current_step = Child.AYY
    restored.current_step = Simple.THREE

    assert restored.changes.values == [
        Position(restored, Simple.TWO),  # the seed: where it was restored
        Position(restored_child, Child.AYY),
        Position(restored, Simple.THREE),
    ]
    assert restored.steps_tree_index_changes.values == [2, 3, 6]


def test_a_restored_tracker_accepts_the_original_of_a_step_pickled_by_value() -> None:
    pt = ProgressTracker(MODULE_LEVEL_STEP, Simple.ONE)
    restored = pickle.loads(pickle.dumps(pt))
    restored.current_step = MODULE_LEVEL_STEP
    assert restored.step_index == 2


def test_a_restored_tracker_still_hears_relabels_of_its_class_level_steps() -> None:
    pt = ProgressTracker(RelabelledInTest.FETCHING)
    restored = pickle.loads(pickle.dumps(pt))
    changes = Recorder(restored.changes)
    RelabelledInTest.FETCHING.label = "Fetching 1/2"
    assert changes.values == [Rendering(restored, RelabelledInTest.FETCHING)]


class RelabelledInTest:
    FETCHING = Step("Fetching")


def test_a_restored_ended_tracker_has_ended_streams() -> None:
    done, failed = simple(), simple()
    done.current_step = DONE
    failed.current_step = Simple.ONE
    failed.end_with_error(ValueError("boom"))

    restored_done = pickle.loads(pickle.dumps(done))
    restored_failed = pickle.loads(pickle.dumps(failed))

    assert Recorder(restored_done.changes).events == [
        ("next", Position(restored_done, DONE)),
        ("completed",),
    ]
    error = restored_failed.changes.error
    assert isinstance(error, ValueError) and str(error) == "boom"
    assert restored_failed.has_ended


# -- properties -----------------------------------------------------------------------------

STEP_OF = {
    "top": [Simple.ONE, Simple.TWO, Simple.THREE, Simple.FOUR],
    "child": [Child.AYY, Child.BEE, Child.SEA],
}


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["top", "child"]), st.integers(min_value=0, max_value=5)),
        max_size=25,
    )
)
def test_index_stream_publishes_each_change_once_and_tracks_the_deepest_step(
    moves: list[tuple[str, int]],
) -> None:
    pt, pt2 = simple(), child()
    pt.set_child_tracker(Simple.THREE, pt2)
    index = Recorder(pt.steps_tree_index_changes)
    for which, position in moves:
        tracker = pt if which == "top" else pt2
        if tracker is pt2 and pt2.parent is None:  # rolled back out of the tree
            continue
        steps = [STARTING, *STEP_OF[which]]
        tracker.current_step = steps[position % len(steps)]

    published = index.values
    assert all(a != b for a, b in itertools.pairwise(published))
    assert published[0] == 0  # a subscriber first gets an index: 0 before the tracker starts
    assert published[-1] == max(pt.steps_tree_index, 0)
    in_child = pt.current_step == Simple.THREE and pt.get_child_tracker(Simple.THREE) is pt2
    deepest = pt2.current_step if in_child else pt.current_step
    if pt.steps_tree_index >= 0 and deepest not in (UNSTARTED, STARTING):
        assert pt.all_steps[pt.steps_tree_index][1] == deepest


def test_change_is_the_common_base_of_the_events() -> None:
    pt = simple()
    assert ProgressTracker.Position is Position
    assert ProgressTracker.Structural is Structural
    assert ProgressTracker.Rendering is Rendering
    assert ProgressTracker.Change is Change
    assert isinstance(Position(pt, Simple.ONE), Change)
