"""Rich rendering of flow progress: ``render_tracker`` draws one ``fibers.ProgressTracker`` as a
tree, ``FlowTreesView`` draws every flow of a node, ``summary_line`` one line per flow, and
``describe_error`` names a flow's failure in one line. Render on the node's thread (see
``FlowTreesView``)."""

from fibers._progress_view import (
    STATIC_MARKER,
    FlowTreesView,
    describe_error,
    render_tracker,
    summary_line,
)

__all__ = ["STATIC_MARKER", "FlowTreesView", "describe_error", "render_tracker", "summary_line"]
