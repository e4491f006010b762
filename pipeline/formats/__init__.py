"""How input bytes are framed and decoded, for every source alike: text
decoding (`decode`)."""
