"""The dashboard's panels: station, procedure form, live plots, run browser, logs."""
