"""Audio helpers shared by transports and providers: G.711 mu-law and resampling."""
