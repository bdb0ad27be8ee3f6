"""Simulators of toy inputs: the CMS tracker (hits), NanoAOD (ttbar vs QCD), workflows with errors, dataset
popularity and FTS transfers. They write the same formats that real inputs come in; they import no torch."""
