"""The search itself, pure: no Ray, no run folder. The search space and its genome encoding (``space``),
the key sets trainers bring (``keyset``), the genetic algorithm (``ga``), the schemes it is measured
against (``baselines``) and the analytic surrogate landscapes (``surrogate``)."""
