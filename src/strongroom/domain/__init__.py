"""Pure business rules: money, payments, refunds, the ledger. Imports nothing outside stdlib."""
