"""Using a trained model: metrics on labelled data (evaluate), masks + event tables for new files (predict),
maps of fields and masks (plots), and the connected TC/AR objects behind the event tables (events)."""
