def hms(seconds: float | None) -> str:
    """hh:mm:ss.mmm"""
    if seconds is None:
        return "--:--:--.---"
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
