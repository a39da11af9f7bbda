"""The decision: the detectors' results turned into one poison score, flags and weights.

:func:`decide` runs the rules in order (``sanitize/decision/decide.py``); each rule
module holds one of them. ``docs/decision.md`` says what each rule does and what it earns.
"""

from sanitize.decision.decide import Decision, decide

__all__ = ["Decision", "decide"]
