"""WTForms forms of the hosted pages (Flask-WTF adds the `csrf_token` field to each)."""
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from ...schemas import normalize_email, storable_text


def _api_rule(check):
    """A WTForms validator applying one of the API's field rules (`check` returns the value, normalised, or raises
    ValueError): the pages accept and store exactly what the API would."""
    def validate(_form, field) -> None:
        try:
            field.data = check(field.data or "")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    return validate


_storable, _address = _api_rule(storable_text), _api_rule(normalize_email)


class LoginForm(FlaskForm):
    """The sign-in page: address and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class SignupForm(FlaskForm):
    """The sign-up page: name (optional), address and password."""

    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class SignupCompleteForm(FlaskForm):
    """The page a signup link opens: name (optional) and the password that finishes the account."""

    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class EmailForm(FlaskForm):
    """An address alone: asking for a password reset link."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])


class NewPasswordForm(FlaskForm):
    """The page a reset link opens: the new password."""

    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=4096)])


class ProfileForm(FlaskForm):
    """The account page's profile: name, and an address (a new one is confirmed by mail)."""

    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])


class ChangePasswordForm(FlaskForm):
    """The account page's password change: the current password, then the new one."""

    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=4096)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=4096)])


class ButtonForm(FlaskForm):
    """A form that is only a button (sign out, resend): it carries the CSRF token and nothing else."""
