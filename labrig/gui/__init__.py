"""The operator dashboard (PyQt6 + pyqtgraph): the only package of labrig that imports Qt.

``labrig gui`` runs :func:`labrig.gui.app.main`. The pieces:

* :mod:`labrig.gui.worker` runs a procedure in a worker thread and hands its documents to the
  GUI thread through a bounded, coalescing queue and a Qt signal;
* :mod:`labrig.gui.main_window` lays out the panels and owns the open rig;
* :mod:`labrig.gui.panels` holds the station, procedure-form, live-plot, run-browser and log panels.
"""
