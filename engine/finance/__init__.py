"""Finance controls: exact money, budget encumbrance, invoices claimed once.

These modules sit below the runner and the services: they know the models, never a channel.
"""
