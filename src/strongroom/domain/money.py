"""Money as integer minor units in an ISO 4217 currency; floats never enter the money path."""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.domain.errors import InvalidRequest

# ISO 4217 active codes and their minor-unit exponents. Codes with exponent 2 are the default
# and listed compactly; the exceptions follow. Funds codes and precious metals are left out
# because nobody takes card payments in them.
_TWO_DECIMALS = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR "
    "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD "
    "PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN "
    "SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWG"
).split()
_ZERO_DECIMALS = ("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF").split()
_THREE_DECIMALS = ("BHD IQD JOD KWD LYD OMR TND").split()

CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS, 2),
    **dict.fromkeys(_ZERO_DECIMALS, 0),
    **dict.fromkeys(_THREE_DECIMALS, 3),
}


def parse_currency(code: str, *, param: str = "currency") -> str:
    """Return the canonical lower-case code, or raise InvalidRequest for an unknown one."""
    upper = code.upper()
    if upper not in CURRENCY_EXPONENTS:
        raise InvalidRequest(
            f"Invalid currency: {code!r}. Use a three-letter ISO 4217 code such as 'usd'.",
            code="invalid_currency",
            param=param,
        )
    return upper.lower()


def exponent(currency: str) -> int:
    """The number of decimal places of the currency's minor unit (JPY 0, USD 2, KWD 3)."""
    return CURRENCY_EXPONENTS[currency.upper()]


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units of one currency. Arithmetic refuses to mix currencies."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise TypeError("Money.amount must be an int of minor units")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def format(self) -> str:
        """Human-readable major units, e.g. '12.34 USD' (display only, never parsed back)."""
        exp = exponent(self.currency)
        sign = "-" if self.amount < 0 else ""
        whole, frac = divmod(abs(self.amount), 10**exp)
        body = f"{whole}.{frac:0{exp}d}" if exp else str(whole)
        return f"{sign}{body} {self.currency.upper()}"


def check_amount(amount: int, *, maximum: int, param: str = "amount") -> int:
    """Refuse amounts that are not positive or exceed the configured maximum."""
    if amount <= 0:
        raise InvalidRequest(
            "Amount must be a positive integer of the currency's minor unit.",
            code="amount_too_small",
            param=param,
        )
    if amount > maximum:
        raise InvalidRequest(
            f"Amount must be no more than {maximum} minor units.",
            code="amount_too_large",
            param=param,
        )
    return amount
