"""Hydra sweeper plugin `hydra/sweeper=cmsdl_optuna`: an Optuna (>= 4) search whose study lives in the sweep directory.

Registered like hydra/launcher=k8s: Hydra's plugin scan misses the plugins of an editable install, so importing this
package registers the sweeper explicitly (cmsdl.sweeps.SweepSummary does when a sweep starts). Optuna itself is
imported only when a search runs.
"""

from hydra.core.plugins import Plugins

from hydra_plugins.cmsdl_optuna_sweeper.optuna_sweeper import OptunaSweeper

if "_registering" not in globals():  # Hydra's plugin scan re-executes this module while Plugins starts up
    _registering = True
    Plugins.instance().register(OptunaSweeper)
