"""finflow engine: runs finance approval processes on SpiffWorkflow and keeps their history.

The engine knows nothing of WeCom or OA; channels subscribe to the events it records.
"""
