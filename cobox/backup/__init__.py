"""The backup peer: password-based key recovery (``recovery``), its messages and key
derivations (``messages``, ``kdf``), and the encrypted keyring it keeps (``keyring``)."""
