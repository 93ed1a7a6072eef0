"""Operations: the production-shaped service stack on loopback (``stack``)."""
