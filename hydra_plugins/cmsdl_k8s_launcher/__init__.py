"""Hydra launcher plugin `hydra/launcher=k8s`: every sweep point of `cmsdl train -m` becomes a Kubernetes job.

Hydra finds plugins by listing the `hydra_plugins` namespace package, which misses packages of an editable
install; importing this package registers the launcher explicitly (`cmsdl train` does), so both work.
"""

from hydra.core.plugins import Plugins

from hydra_plugins.cmsdl_k8s_launcher.k8s_launcher import K8sLauncher

if "_registering" not in globals():  # Hydra's plugin scan re-executes this module while Plugins starts up
    _registering = True
    Plugins.instance().register(K8sLauncher)
