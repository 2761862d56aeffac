"""The inspector's screens: they compose widgets and route messages between them."""
