"""Where the training state of tfq's callbacks lives: on the model, so that Keras saves it.

ADMM keeps three kernel-sized variables per compressed kernel and pruning its
masks and slope averages (`tfq.admm.ADMMState`, `tfq.pruning.PruningState`).
A run interrupted and resumed by `keras.callbacks.BackupAndRestore` must get
them back, and `BackupAndRestore` saves `model.save_weights`, which writes
what Keras finds walking the model's attributes.

Keras 3 has no public way to add such state to a built model without changing
the model: `model.add_weight` makes it one of the model's own variables (a
`load_model` of the saved file then refuses the extra variables), and
assigning a layer as an attribute makes it one of the model's layers (in a
`Sequential`, a layer of the stack). So each state layer is set as an
attribute Keras' tracker does not see, under a fixed name that is also its
path inside saved files. The names are those of tfq 0.1.0, whose backups
therefore still resume. This module is the only code that reads or writes
them; everything else asks it.
"""

__all__ = ["ADMM", "PRUNING", "get", "attach", "has_any"]

ADMM = "admm"
PRUNING = "pruning"
_ATTRS = {ADMM: "_tfq_admm", PRUNING: "_tfq_pruning"}


def get(model, kind):
    """The state layer of `kind` ("admm" or "pruning") on `model`, or None."""
    return vars(model).get(_ATTRS[kind]) if model is not None else None


def attach(model, kind, state):
    """Puts `state` on `model` as its `kind` state (replacing any earlier one)."""
    object.__setattr__(model, _ATTRS[kind], state)


def has_any(model):
    """True when `model` carries training state of any kind."""
    return any(get(model, kind) is not None for kind in _ATTRS)
