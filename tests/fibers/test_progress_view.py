"""Rendering of progress trackers and of the many-flows view, by exact text."""

from __future__ import annotations

import io

import pytest
from rich.console import Console, RenderableType
from rich.text import Text

from fibers._progress import ProgressTracker, Step
from fibers._progress_view import FlowTreesView, render_tracker, summary_line

STARTING, DONE = ProgressTracker.STARTING, ProgressTracker.DONE


class Seller:
    OFFER = Step("Constructing offer")
    SENDING = Step("Sending offer")
    VERIFYING = Step("Verifying")


class Finality:
    NOTARISING = Step("Notarising")
    BROADCASTING = Step("Broadcasting")


def seller() -> ProgressTracker:
    return ProgressTracker(Seller.OFFER, Seller.SENDING, Seller.VERIFYING)


def finality() -> ProgressTracker:
    return ProgressTracker(Finality.NOTARISING, Finality.BROADCASTING)


def is_dirty(view: FlowTreesView) -> bool:
    return view.dirty  # read through a call: mypy would keep an asserted value narrowed


def render(renderable: RenderableType, *, height: int | None = None) -> str:
    console = Console(
        width=60,
        height=height,
        color_system=None,
        record=True,
        file=io.StringIO(),
        get_time=lambda: 0.0,
    )
    console.print(renderable)
    return console.export_text()


def seller_in_finality() -> tuple[ProgressTracker, ProgressTracker]:
    pt, child = seller(), finality()
    pt.current_step = Seller.SENDING
    pt.set_child_tracker(Seller.SENDING, child)
    child.current_step = Finality.NOTARISING
    return pt, child


# -- one tracker ----------------------------------------------------------------------------


def test_an_unstarted_tracker_shows_every_step_pending() -> None:
    assert render(seller()) == "  Constructing offer\n  Sending offer\n  Verifying\n"


def test_starting_is_shown_only_while_current() -> None:
    pt = seller()
    pt.current_step = STARTING
    assert render(pt) == "▶ Starting\n  Constructing offer\n  Sending offer\n  Verifying\n"
    pt.next_step()
    assert render(pt) == "▶ Constructing offer\n  Sending offer\n  Verifying\n"


def test_done_steps_are_ticked_and_children_nested_under_their_step() -> None:
    pt, _ = seller_in_finality()
    assert render(pt) == (
        "✓ Constructing offer\n"
        "▶ Sending offer\n"
        "├── ▶ Notarising\n"
        "└──   Broadcasting\n"
        "  Verifying\n"
    )


def test_a_done_tracker_ticks_every_step_and_hides_done() -> None:
    pt = seller()
    pt.current_step = DONE
    assert render(pt) == "✓ Constructing offer\n✓ Sending offer\n✓ Verifying\n"


def test_a_failed_tracker_shows_the_failing_step_with_the_error() -> None:
    pt = seller()
    pt.current_step = Seller.SENDING
    pt.end_with_error(ValueError("price too low"))
    assert render(pt) == (
        "✓ Constructing offer\n✗ Sending offer — ValueError: price too low\n  Verifying\n"
    )


def test_a_failure_before_the_first_step_shows_where_it_happened() -> None:
    unstarted, starting = seller(), seller()
    unstarted.end_with_error(KeyError())
    starting.current_step = STARTING
    starting.end_with_error(RuntimeError("no session"))
    assert render(unstarted).splitlines()[0] == "✗ Unstarted — KeyError"
    assert render(starting).splitlines()[0] == "✗ Starting — RuntimeError: no session"


def test_a_failed_child_is_red_under_a_parent_that_carries_on() -> None:
    pt, child = seller_in_finality()
    child.end_with_error(TimeoutError("notary unreachable"))
    assert render(pt) == (
        "✓ Constructing offer\n"
        "▶ Sending offer\n"
        "├── ✗ Notarising — TimeoutError: notary unreachable\n"
        "└──   Broadcasting\n"
        "  Verifying\n"
    )


def test_when_the_parent_fails_the_current_steps_below_it_fail_too() -> None:
    pt, _ = seller_in_finality()
    pt.end_with_error(RuntimeError("x"))
    assert render(pt) == (
        "✓ Constructing offer\n"
        "✗ Sending offer — RuntimeError: x\n"
        "├── ✗ Notarising\n"
        "└──   Broadcasting\n"
        "  Verifying\n"
    )


def test_steps_are_styled_by_state() -> None:
    pt, child = seller_in_finality()
    child.end_with_error(ValueError())
    tree = render_tracker(pt)
    styles = [node.label.style for node in tree.children if isinstance(node.label, Text)]
    assert styles == ["green", "bold", "dim"]
    failed = tree.children[1].children[0].label
    assert isinstance(failed, Text) and failed.style == "red"


def test_a_titled_tree_draws_its_root() -> None:
    pt, _ = seller_in_finality()
    assert render(render_tracker(pt, "Seller")) == (
        "Seller\n"
        "├── ✓ Constructing offer\n"
        "├── ▶ Sending offer\n"
        "│   ├── ▶ Notarising\n"
        "│   └──   Broadcasting\n"
        "└──   Verifying\n"
    )


def test_relabelled_steps_render_their_new_label() -> None:
    step = Step("Downloading")
    pt = ProgressTracker(step)
    pt.current_step = step
    step.label = "Downloading 2/5"
    assert render(pt) == "▶ Downloading 2/5\n"


# -- one line per flow ----------------------------------------------------------------------


def test_summary_line_counts_the_deepest_step_among_the_flattened_steps() -> None:
    pt, child = seller_in_finality()
    assert summary_line("T", pt).plain == "T — Notarising (3/5)"
    child.current_step = DONE
    assert summary_line("T", pt).plain == "T — Sending offer (2/5)"
    fresh = seller()
    assert summary_line("T", fresh).plain == "T — Unstarted (0/3)"
    fresh.current_step = DONE
    assert summary_line("T", fresh).plain == "T — Done (3/3)"


def test_summary_line_of_a_failure_shows_the_error_nearest_the_step() -> None:
    pt, child = seller_in_finality()
    child.end_with_error(TimeoutError("notary unreachable"))
    pt.end_with_error(RuntimeError("sub-flow failed"))
    line = summary_line("T", pt)
    assert line.plain == "T — ✗ Notarising (3/5) TimeoutError: notary unreachable"
    assert line.style == "red"


# -- many flows -----------------------------------------------------------------------------


def two_flows() -> tuple[FlowTreesView, ProgressTracker, ProgressTracker]:
    view = FlowTreesView()
    seller_pt, _ = seller_in_finality()
    buyer_pt = seller()
    buyer_pt.current_step = Seller.VERIFYING
    title = FlowTreesView.flow_title
    view.add("3f2a99c1", title("TwoPartyTradeFlow.Seller", "3f2a99c1", "BankB"), seller_pt)
    view.add("77aa0012", title("TwoPartyTradeFlow.Buyer", "77aa0012", "BankA"), buyer_pt)
    return view, seller_pt, buyer_pt


FULL = (
    "TwoPartyTradeFlow.Seller  3f2a…  with BankB\n"
    "├── ✓ Constructing offer\n"
    "├── ▶ Sending offer\n"
    "│   ├── ▶ Notarising\n"
    "│   └──   Broadcasting\n"
    "└──   Verifying\n"
    "TwoPartyTradeFlow.Buyer  77aa…  with BankA\n"
    "├── ✓ Constructing offer\n"
    "├── ✓ Sending offer\n"
    "└── ▶ Verifying\n"
)


def test_flows_are_drawn_as_titled_trees_when_they_fit() -> None:
    view, _, _ = two_flows()
    assert render(view, height=10) == FULL
    assert render(view, height=40) == FULL


def test_flows_collapse_to_one_line_each_when_the_trees_do_not_fit() -> None:
    view, _, _ = two_flows()
    assert render(view, height=9) == (
        "TwoPartyTradeFlow.Seller  3f2a…  with BankB — Notarising (3…\n"
        "TwoPartyTradeFlow.Buyer  77aa…  with BankA — Verifying (3/3)\n"
    )


def test_collapsed_lines_that_do_not_fit_say_how_many_flows_are_hidden() -> None:
    view, _, _ = two_flows()
    view.add("c0ffee00", "Third", seller())
    assert render(view, height=2) == (
        "TwoPartyTradeFlow.Seller  3f2a…  with BankB — Notarising (3…\n… and 2 more flows\n"
    )


def test_flow_title_shortens_the_run_id() -> None:
    assert FlowTreesView.flow_title("Ping", "3f2a99c1") == "Ping  3f2a…"
    assert FlowTreesView.flow_title("Ping", "ab", "BankB") == "Ping  ab  with BankB"


def test_an_animated_marker_takes_the_spinner_frame_from_the_console_clock() -> None:
    view = FlowTreesView(spinner="dots")
    pt = seller()
    pt.current_step = Seller.OFFER
    view.add("r1", "Flow", pt)
    assert render(view) == "Flow\n├── ⠋ Constructing offer\n├──   Sending offer\n└──   Verifying\n"


def test_tracker_events_mark_the_view_dirty_and_rendering_cleans_it() -> None:
    calls: list[None] = []
    view = FlowTreesView(on_change=lambda: calls.append(None))
    pt = seller()
    view.add("r1", "Flow", pt)
    assert is_dirty(view) and len(calls) == 1
    pt.current_step = STARTING
    pt.next_step()
    assert len(calls) == 1  # already dirty: the owner has not rendered yet
    render(view)
    assert not is_dirty(view)
    pt.next_step()
    assert is_dirty(view) and len(calls) == 2


def test_the_end_of_a_tracker_marks_the_view_dirty() -> None:
    view = FlowTreesView()
    done, failed = seller(), seller()
    view.add("done", "Done", done)
    view.add("failed", "Failed", failed)
    render(view)
    done.current_step = DONE
    assert is_dirty(view)
    render(view)
    failed.end_with_error(ValueError())
    assert is_dirty(view)


def test_removing_a_flow_unsubscribes_from_its_tracker() -> None:
    view, seller_pt, _ = two_flows()
    view.remove("3f2a99c1")
    render(view)
    seller_pt.current_step = Seller.VERIFYING
    assert not is_dirty(view)
    assert view.run_ids == ["77aa0012"]
    with pytest.raises(KeyError, match="not in this view"):
        view.remove("3f2a99c1")


def test_titles_can_change_and_run_ids_are_unique() -> None:
    view = FlowTreesView()
    view.add("r1", "Old", seller())
    render(view)
    view.update_title("r1", "New")
    assert is_dirty(view)
    assert render(view).splitlines()[0] == "New"
    with pytest.raises(ValueError, match="already in this view"):
        view.add("r1", "Again", seller())
    with pytest.raises(KeyError, match="'r2' is not in this view"):
        view.update_title("r2", "x")
