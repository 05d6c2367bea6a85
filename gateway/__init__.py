"""The SMTP side: intake (aiosmtpd), spool, delivery (aiosmtplib), DSNs."""
