"""Certificates and badges: drawing them, numbering them, sending them by e-mail.

- `bots.certificates.render` — `render_certificate`, `render_badge` (pure CPU work) and the
  `CertificateRenderer` process pool that runs them off the event loop.
- `bots.certificates.serial` — serial numbers for the public verify page.
- `bots.certificates.mail` — the e-mail that carries them (SMTP with aiosmtplib).

Nothing is imported here, so the verify route can use `serial` without loading Pillow or SMTP.
"""
