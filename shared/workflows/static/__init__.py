"""Static workflows that ship with XNovu, one package each."""
