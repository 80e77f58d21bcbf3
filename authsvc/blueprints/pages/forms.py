"""WTForms forms of the hosted pages (Flask-WTF adds the `csrf_token` field to each)."""
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, Length, Optional


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class SignupForm(FlaskForm):
    full_name = StringField("Name", validators=[Optional(), Length(max=200)])
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class SignupCompleteForm(FlaskForm):
    full_name = StringField("Name", validators=[Optional(), Length(max=200)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class EmailForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])


class NewPasswordForm(FlaskForm):
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=4096)])


class ProfileForm(FlaskForm):
    full_name = StringField("Name", validators=[Optional(), Length(max=200)])
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=4096)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=4096)])


class ButtonForm(FlaskForm):
    """A form that is only a button (sign out, resend): it carries the CSRF token and nothing else."""
