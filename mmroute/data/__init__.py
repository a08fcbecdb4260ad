"""Preference data: file formats, importers from public datasets, the feedback store, the example set.

Only the formats are imported eagerly (they are what every caller needs); importers, the store and
the example generator are imported from their modules.
"""

from .formats import (DataLineError, Judgment, Outcome, QueryRecord, ReadResult, outcomes_to_judgments, read_judgments,
                      read_outcomes, write_jsonl)

__all__ = ["DataLineError", "Judgment", "Outcome", "QueryRecord", "ReadResult", "outcomes_to_judgments",
           "read_judgments", "read_outcomes", "write_jsonl"]
