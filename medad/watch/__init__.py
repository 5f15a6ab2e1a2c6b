"""``medad watch``: an AI node beside a PACS that scores each new stable study and stores its results back.

:func:`run_node` follows Orthanc's change feed (:mod:`medad.watch.feed`), keeps its position and a record of every
study in a state folder that survives restarts and ``kill -9`` (:mod:`medad.watch.state`), and for each study
fetches the image series over DICOMweb, scores them with one model, exports SEG / Parametric Map through the export
API, gives the results UIDs a redo reproduces (:mod:`medad.watch.uids`) and stores them with STOW-RS
(:mod:`medad.watch.study`). See docs/hospital.md.
"""

from medad.watch.node import Node, NodeSummary, run_node
from medad.watch.settings import StudyFilter, WatchError, WatchSettings, load_credentials
from medad.watch.state import WatchState, study_pseudonym

__all__ = [
    "Node",
    "NodeSummary",
    "StudyFilter",
    "WatchError",
    "WatchSettings",
    "WatchState",
    "load_credentials",
    "run_node",
    "study_pseudonym",
]
