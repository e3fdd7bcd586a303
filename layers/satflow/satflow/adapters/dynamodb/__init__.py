"""DynamoDB adapters (single table, pynamodb models). Import this package lazily: pynamodb costs ~130 ms cold."""
