"""The invoice states the API documents are the domain's, no more and no fewer (ACCEPTED was added for internal
payments in progress; a client must be able to read every state it can be shown)."""
from __future__ import annotations

from satflow.api import openapi
from satflow.domain.invoices import InvoiceStatus


def test_the_openapi_invoice_status_enum_is_the_domains():
    assert set(openapi._INVOICE_STATUSES) == {s.value for s in InvoiceStatus}
    assert openapi._INVOICE["properties"]["status"]["enum"] == openapi._INVOICE_STATUSES
