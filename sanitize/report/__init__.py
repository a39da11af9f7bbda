"""What a person reads: report.json's summary, the HTML report, its plots, progress."""
